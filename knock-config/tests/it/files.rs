//! Files named by a configuration that are not regular files, or are too
//! large, or hold an over-long entry: each is refused promptly with an error
//! naming the file, and no message echoes more than a short excerpt.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use knock_config::{Config, ConfigError, SequenceFile, EXCERPT_CHARS, MAX_SEQUENCE_FILE_SIZE};

/// How long a refusal may take before the test gives up on it (a read that
/// blocks or never ends would otherwise hang the test run).
const PATIENCE: Duration = Duration::from_secs(10);

/// The longest message an error about a bad entry of a sequence file may
/// have.
const SHORT: usize = 200;

/// The same for the configuration, whose messages may list what is
/// expected (every key of a door...).
const SHORT_CONF: usize = 600;

/// Runs `f` on a thread and returns its result, or fails the test if it
/// has not returned within [`PATIENCE`] (the thread is left behind).
#[track_caller]
fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(v) => v,
        Err(_) => panic!("{what}: still running after {PATIENCE:?} (blocked or reading forever)"),
    }
}

/// Loads knockd.conf text (with its files) on a thread, expecting an error.
#[track_caller]
fn load_err(conf: String) -> ConfigError {
    match promptly("loading the configuration", move || {
        Config::from_knockd_str(&conf, "/etc/knockd.conf").map_err(Box::new)
    }) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => *e,
    }
}

fn door(body: &str) -> String {
    format!("[options]\n  Interface = eth0\n\n[door]\n{body}\n")
}

/// A FIFO in `dir` with mode 0600 (so a secret-file check of the mode
/// passes and only the file type is left to refuse it).
fn fifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    p
}

#[track_caller]
fn says(e: &ConfigError, pieces: &[&str]) {
    let msg = e.to_string();
    for p in pieces {
        assert!(msg.contains(p), "{msg:?} lacks {p:?}");
    }
}

#[test]
fn dev_zero_as_sequence_file_is_refused_without_reading_it() {
    for key in ["sequence", "one_time_sequences"] {
        let e = load_err(door(&format!("  {key} = /dev/zero")));
        says(&e, &["/dev/zero", "not a regular file", "character device"]);
    }
}

#[test]
fn fifo_as_sequence_file_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    for key in ["sequence", "one_time_sequences"] {
        let p = fifo(dir.path(), key);
        let e = load_err(door(&format!("  {key} = {}", p.display())));
        assert!(
            matches!(e, ConfigError::SequenceFileMissing { .. }),
            "{e:?}"
        );
        says(
            &e,
            &[
                "/etc/knockd.conf",
                "[door]",
                &p.display().to_string(),
                "not a regular file (a FIFO)",
            ],
        );
    }
}

#[test]
fn fifo_as_secret_file_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let p = fifo(dir.path(), "door.key");
    let e = load_err(door(&format!("  sequence_secret_file = {}", p.display())));
    assert!(matches!(e, ConfigError::SecretFile { .. }), "{e:?}");
    says(
        &e,
        &[
            "/etc/knockd.conf:5",
            "[door]",
            &p.display().to_string(),
            "not a regular file (a FIFO)",
        ],
    );
}

#[test]
fn fifo_as_the_configuration_itself_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let p = fifo(dir.path(), "knockd.conf");
    let q = p.clone();
    let e = promptly("knockd.conf", move || {
        Config::from_knockd_file(&q).map_err(Box::new)
    })
    .unwrap_err();
    says(
        &e,
        &[&p.display().to_string(), "not a regular file (a FIFO)"],
    );
    let q = p.clone();
    let e = promptly("TOML", move || Config::from_toml_file(&q).map_err(Box::new)).unwrap_err();
    says(
        &e,
        &[&p.display().to_string(), "not a regular file (a FIFO)"],
    );
}

#[test]
fn directory_as_sequence_or_secret_file_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for key in ["sequence", "one_time_sequences", "sequence_secret_file"] {
        let e = load_err(door(&format!("  {key} = {d}")));
        says(&e, &["[door]", &d, "not a regular file (a directory)"]);
    }
}

#[test]
fn oversized_files_are_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let line = " 1000,2000\n";
    let n = (MAX_SEQUENCE_FILE_SIZE as usize) / line.len() + 1;
    std::fs::write(&big, line.repeat(n)).unwrap();
    let e = load_err(door(&format!("  sequence = {}", big.display())));
    says(
        &e,
        &[
            &big.display().to_string(),
            &format!("larger than {MAX_SEQUENCE_FILE_SIZE} bytes"),
        ],
    );
    let key = crate::secret(dir.path(), "big.key", &"k".repeat(70_000));
    let e = load_err(door(&format!("  sequence_secret_file = {}", key.display())));
    says(&e, &[&key.display().to_string(), "larger than 65536 bytes"]);
}

#[test]
fn marking_a_sequence_used_refuses_a_file_replaced_by_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::write(dir.path(), "otp", " 1000\n 2000\n");
    let mut f = SequenceFile::load(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    let q = fifo(dir.path(), "otp");
    let e = promptly("mark_used", move || f.mark_used(0).map_err(Box::new)).unwrap_err();
    says(
        &e,
        &[&q.display().to_string(), "not a regular file (a FIFO)"],
    );
    // The FIFO is still there: nothing was renamed over it.
    assert!(std::fs::symlink_metadata(&q).unwrap().file_type().is_fifo());
}

/// The longest run of one repeated character in `s`.
fn longest_run(s: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    let mut last = None;
    for c in s.chars() {
        run = if last == Some(c) { run + 1 } else { 1 };
        last = Some(c);
        best = best.max(run);
    }
    best
}

/// Asserts `e` is at most `max` bytes, names `at`, and quotes no more than
/// an excerpt of the 100 kB entry (made of one repeated character).
#[track_caller]
fn short_with_excerpt(e: &ConfigError, at: &str, max: usize) {
    let msg = e.to_string();
    assert!(
        msg.len() <= max && longest_run(&msg) <= EXCERPT_CHARS,
        "{} bytes: {}...",
        msg.len(),
        msg.get(..300).unwrap_or(&msg)
    );
    says(e, &[at, "…"]);
}

#[test]
fn over_long_entries_in_a_sequence_file_are_quoted_as_an_excerpt() {
    let dir = tempfile::tempdir().unwrap();
    let port = "1".repeat(100_000);
    let steps = (1..=50_000).map(|p| p.to_string()).collect::<Vec<_>>();
    let cases = [
        // One huge token: not a port.
        (format!(" 1000\n 2000,{port}\n"), ":2:7"),
        // A huge sequence: too many steps.
        (format!(" {}\n", steps.join(",")), ":1:2"),
        // A huge unknown protocol.
        (format!(" 1000:{}\n", "x".repeat(100_000)), ":1:2"),
    ];
    for (i, (text, at)) in cases.iter().enumerate() {
        let p = crate::write(dir.path(), &format!("seq{i}"), text);
        let e = load_err(door(&format!("  sequence = {}", p.display())));
        short_with_excerpt(&e, &format!("{}{at}", p.display()), SHORT);
    }
}

#[test]
fn over_long_text_in_the_configuration_is_quoted_as_an_excerpt() {
    let long = "x".repeat(100_000);
    let cases = [
        // A line that is not `key = value`.
        (
            format!("[options]\n  Interface = eth0\n  {long} {long}\n"),
            "/etc/knockd.conf:3:3",
        ),
        // An unknown key.
        (
            door(&format!("  sequence = 1,2\n  {long} = 1")),
            "/etc/knockd.conf:6:3",
        ),
        // A bad value.
        (
            door(&format!("  sequence = 1,2\n  seq_timeout = {long}")),
            "/etc/knockd.conf:6",
        ),
        // A bad sequence entry.
        (
            door(&format!("  sequence = 1,{}", "9".repeat(100_000))),
            "/etc/knockd.conf:5",
        ),
        // Bad TCP flags.
        (
            door(&format!("  sequence = 1,2\n  tcpflags = {long}")),
            "/etc/knockd.conf:6",
        ),
    ];
    for (conf, at) in cases {
        let e = load_err(conf);
        short_with_excerpt(&e, at, SHORT_CONF);
    }
}

#[test]
fn over_long_text_in_toml_is_quoted_as_an_excerpt() {
    let long = "x".repeat(100_000);
    for line in [
        format!("sequence = [\"{long}\"]"),
        format!("sequence = [\"1\"]\nfirewall = \"{long}\""),
        format!("sequence = [\"1\"]\nseq_timeout = \"{long}\""),
        format!("sequence = [\"1\"]\n{long} = 1"),
    ] {
        let toml = format!("[[door]]\nname = \"d\"\n{line}\n");
        let e = Config::parse_toml_str(&toml, "knock.toml").unwrap_err();
        short_with_excerpt(&e, "knock.toml:", SHORT_CONF);
    }
}
