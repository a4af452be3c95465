//! The program's memory allocator: the system's, with advice to the kernel
//! for the matcher's large tables, which a flood of new sources fills.
//!
//! The matcher reserves its source index whole when it starts (10 MiB at
//! the default limit of a million sources), and a flood of new sources
//! fills it at random: in 4 KiB pages nearly every new source's probe
//! misses the TLB, and in a virtual machine each miss is a walk of two sets
//! of page tables. So a zeroed allocation of [`HUGE_FROM`] bytes or more
//! (the index is the only one the daemon makes) is advised to use
//! transparent huge pages, `madvise(MADV_HUGEPAGE)` on its 2 MiB-aligned
//! part: where the system's setting is `madvise` (Debian's default) the
//! kernel then backs it with 2 MiB pages as they are first touched. The
//! records and timers are not advised so: they are written in order, which
//! the TLB follows well, and huge pages for every large allocation measured
//! slower (benches/RESULTS.md).
//!
//! They grow instead, an eighth at a time: the part a vector of
//! [`HUGE_FROM`] bytes or more grows by is faulted in at once
//! (`MADV_POPULATE_WRITE`), one system call instead of a page fault per
//! 4 KiB as the flood writes it.
//!
//! The cost: a touched part of the index is backed 2 MiB at a time, so a
//! daemon with a few sources may hold up to the index's size (10 MiB by
//! default) where it held a few pages; a growing table holds the eighth it
//! grew by as soon as it grows.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// The size of a transparent huge page on x86-64 and arm64 (4 KiB base
/// pages).
const HUGE_PAGE: usize = 2 << 20;

/// Zeroed allocations from this size on are advised to use huge pages, and
/// vectors that grow to this size have the part they grew by faulted in.
const HUGE_FROM: usize = 2 * HUGE_PAGE;

/// The system allocator; see the [module documentation](self).
pub(crate) struct TableAdvice;

// SAFETY: every call is the system allocator's, with the same arguments;
// the advice given after `alloc_zeroed` changes how pages of the new block
// are backed, never their contents or whether they are mapped.
unsafe impl GlobalAlloc for TableAdvice {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received (the caller's contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received (the caller's contract).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && layout.size() >= HUGE_FROM {
            advise_huge(p, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received (the caller's contract).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && new_size >= HUGE_FROM && new_size > layout.size() {
            populate(p, layout.size(), new_size);
        }
        p
    }
}

/// The size of a base page (x86-64, and arm64 as Debian builds it).
const PAGE: usize = 4096;

/// Backs the 2 MiB pages of the `len` bytes at `p` with huge pages as they
/// are first touched (`MADV_HUGEPAGE`). Without transparent huge pages (or
/// with the setting `never`) the call fails and nothing changes.
fn advise_huge(p: *mut u8, len: usize) {
    advise(p, 0..len, HUGE_PAGE, libc::MADV_HUGEPAGE);
}

/// Faults in bytes `from..to` of the block at `p` in one call
/// (`MADV_POPULATE_WRITE`): a vector grows when it is full, so the part it
/// grew by is about to be written, page after page, and one call is
/// cheaper than a fault per page. Where the kernel lacks it (before 5.14)
/// the call fails and the pages fault in as they are written.
fn populate(p: *mut u8, from: usize, to: usize) {
    advise(p, from..to, PAGE, libc::MADV_POPULATE_WRITE);
}

/// `madvise(advice)` for the whole pages of `page` bytes within bytes
/// `range` of the block at `p`; a failure is left alone (advice only).
fn advise(p: *mut u8, range: std::ops::Range<usize>, page: usize, advice: libc::c_int) {
    let start = (p.addr() + range.start).next_multiple_of(page);
    let end = (p.addr() + range.end) / page * page;
    if end > start {
        // SAFETY: `start..end` lies inside `range` of the block at `p`,
        // which the caller just allocated; both pieces of advice given
        // change how its pages are backed, never what they hold.
        unsafe {
            libc::madvise(
                p.with_addr(start).cast::<libc::c_void>(),
                end - start,
                advice,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    /// The system's transparent huge page setting (the bracketed word of
    /// `/sys/kernel/mm/transparent_hugepage/enabled`).
    fn thp_setting() -> Option<String> {
        let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
        let open = s.find('[')?;
        let close = s[open..].find(']')?;
        Some(s[open + 1..open + close].to_string())
    }

    /// `AnonHugePages` of the mapping of this process that holds `addr`,
    /// in KiB (`/proc/self/smaps`).
    fn huge_kib_at(addr: usize) -> Option<u64> {
        smaps_kib_at(addr, "AnonHugePages:")
    }

    /// Field `field` of the mapping of this process that holds `addr`, in
    /// KiB (`/proc/self/smaps`).
    fn smaps_kib_at(addr: usize, field: &str) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = head.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix(field) {
                    return v.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    #[test]
    fn a_large_zeroed_table_is_backed_by_huge_pages() {
        match thp_setting().as_deref() {
            Some("always") | Some("madvise") => {}
            other => {
                eprintln!("transparent huge pages are {other:?} here: nothing to check");
                return;
            }
        }
        // Zeroed, as the matcher's index is (`vec![0; n]`), then touched
        // a page at a time.
        let mut table = vec![0u32; 16 << 20 >> 2];
        for i in (0..table.len()).step_by(1024) {
            table[i] = 1;
        }
        let at = table.as_ptr().addr() + table.len() * 2;
        let huge = huge_kib_at(at).expect("the table's mapping in /proc/self/smaps");
        assert!(
            huge >= 8 << 10,
            "{huge} KiB of the 16 MiB table in huge pages"
        );
        assert_eq!(std::hint::black_box(&table)[1024], 1);
    }

    #[test]
    fn a_large_table_that_grows_in_order_is_left_in_small_pages() {
        if thp_setting().as_deref() != Some("madvise") {
            eprintln!("transparent huge pages are not `madvise` here: nothing to check");
            return;
        }
        let mut table: Vec<u32> = Vec::with_capacity(16 << 20 >> 2);
        table.resize(table.capacity(), 1);
        let at = table.as_ptr().addr() + table.len() * 2;
        let huge = huge_kib_at(at).expect("the table's mapping in /proc/self/smaps");
        assert_eq!(huge, 0, "a vector filled in order is not advised");
    }

    #[test]
    fn the_part_a_large_vector_grows_by_is_resident_before_it_is_written() {
        const MIB: usize = 1 << 20;
        let mut table: Vec<u8> = Vec::with_capacity(8 * MIB);
        table.resize(table.capacity(), 1);
        table.reserve_exact(8 * MIB);
        let rss = smaps_kib_at(table.as_ptr().addr(), "Rss:").expect("the table's mapping");
        assert!(
            rss >= 15 << 10,
            "{rss} KiB resident of a 16 MiB vector whose first 8 MiB were written"
        );
        table.resize(table.capacity(), 2);
        assert_eq!(std::hint::black_box(&table)[12 * MIB], 2);
    }
}
