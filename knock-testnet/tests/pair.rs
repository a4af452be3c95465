//! The namespace helpers themselves work (root only).

#[test]
#[ignore = "needs root"]
fn pair_pings_both_families_and_cleans_up() {
    let name;
    {
        let pair = knock_testnet::Pair::new().unwrap();
        name = pair.server.name().to_owned();
        pair.client
            .run(&["ping", "-c1", "-W2", knock_testnet::SERVER_V4])
            .unwrap();
        pair.client
            .run(&["ping", "-6", "-c1", "-W2", knock_testnet::SERVER_V6])
            .unwrap();
        let seen = pair
            .server
            .enter(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
            .unwrap();
        assert!(seen.contains(knock_testnet::SERVER_IF), "{seen}");
    }
    let list = knock_testnet::run(&["ip", "netns", "list"]).unwrap();
    assert!(
        !list.contains(&name),
        "namespace {name} left behind: {list}"
    );
}
