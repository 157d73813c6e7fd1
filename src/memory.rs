//! Handing memory the service no longer needs back to the operating system, at the moments it
//! has just stopped needing a lot: after the store is opened (sled's recovery reads its snapshot
//! and log into buffers it drops), and once the service is ready (the start-up's code pages).
//! Owns no state; knows only the allocator and the program's own image.
//!
//! Why: mimalloc keeps freed pages of a thread's heap for reuse, so the start-up's garbage
//! stayed resident (about 35 MB on a store of a million approvals, docs/benchmarks.md, memory).
//! `mi_collect(true)` returns what the calling thread's heap no longer uses. It is harmless
//! under another allocator (the `system-allocator` feature, the test binaries): mimalloc's
//! own heap is empty there.

/// Return the calling thread's freed memory to the OS. Costs a walk of that thread's heap:
/// call it after a burst, not on a hot path.
pub fn return_freed() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Ask the kernel to reclaim the pages of this program's code and read-only data that nobody
/// else maps, once the service is ready; returns how many bytes it was asked about.
///
/// Why: starting touches code all over the binary (settings, the store's recovery, every
/// actor's start, the HTTP server), and each first touch maps the 64 KiB around it (the
/// kernel's fault-around): 15–16 MB of the binary stayed resident when idle, of which the
/// steady state uses about a quarter (docs/benchmarks.md, memory). `MADV_PAGEOUT` reclaims them
/// as memory pressure would; what runs afterwards reads its pages back on first use.
///
/// Safe on any non-writable segment: the kernel reclaims only clean pages, so a page a
/// debugger or a uprobe changed (private, anonymous) stays, and pages another process maps
/// (a second instance of the same binary) are left alone. The writable and relocated
/// segments (data, `.data.rel.ro`) are never touched. A kernel without `MADV_PAGEOUT` (before
/// 5.4) answers EINVAL and nothing happens.
///
/// A binary written moments ago (`cargo run --release`, a fresh install) still has dirty pages
/// in the page cache, which reclaim skips: the file is written out first (`fsync`, which the
/// kernel would do within about 30 s anyway), so it blocks: call it off the runtime's threads.
#[cfg(target_os = "linux")]
pub fn release_start_up_pages() -> usize {
    if let Err(error) = std::fs::File::open("/proc/self/exe").and_then(|exe| exe.sync_data()) {
        tracing::debug!(%error, "cannot write out the program's own file; dirty pages stay");
    }
    let mut asked = 0usize;
    // SAFETY: `own_image_segments` only reads the headers dl_iterate_phdr hands it, and
    // `asked` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(own_image_segments),
            (&raw mut asked).cast::<std::ffi::c_void>(),
        );
    }
    asked
}

#[cfg(not(target_os = "linux"))]
pub fn release_start_up_pages() -> usize {
    0
}

/// dl_iterate_phdr's callback: reclaim the program's read-only loaded segments. The program
/// itself is the first object reported; returning 1 stops the walk there.
#[cfg(target_os = "linux")]
unsafe extern "C" fn own_image_segments(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    asked: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: dl_iterate_phdr passes a valid `info` for the duration of the call, and `asked`
    // is the `usize` release_start_up_pages lent it.
    let (info, asked) = unsafe { (&*info, &mut *asked.cast::<usize>()) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of the loaded object.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let page = page_size();
    let relro = headers
        .iter()
        .find(|h| h.p_type == libc::PT_GNU_RELRO)
        .map(|h| (h.p_vaddr, h.p_vaddr + h.p_memsz));
    for header in headers {
        let read_only = header.p_type == libc::PT_LOAD && header.p_flags & libc::PF_W == 0;
        let relocated = relro.is_some_and(|(from, to)| {
            header.p_vaddr < to && from < header.p_vaddr + header.p_memsz
        });
        if !read_only || relocated {
            continue;
        }
        // Whole pages inside the segment only: its first and last page may hold a neighbour's bytes.
        let from = (info.dlpi_addr as usize + header.p_vaddr as usize).div_ceil(page) * page;
        let to =
            (info.dlpi_addr as usize + (header.p_vaddr + header.p_filesz) as usize) / page * page;
        if to > from {
            // SAFETY: the range lies inside a mapping of this program's own read-only image;
            // MADV_PAGEOUT changes no content, only what is resident.
            let answer = unsafe {
                libc::madvise(from as *mut std::ffi::c_void, to - from, libc::MADV_PAGEOUT)
            };
            if answer == 0 {
                *asked += to - from;
            }
        }
    }
    1
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// This process's resident file-backed pages (its code, read-only data and libraries), KiB.
    fn resident_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("RssFile:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("an RssFile line")
    }

    /// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (v3 and v2 alike); the -sys
    /// crate names only some of the options.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

    #[test]
    fn mimalloc_commits_its_arena_as_used_without_being_told() {
        // The build's default (`.cargo/config.toml`), unless the environment says otherwise.
        let expected = std::env::var("MIMALLOC_ARENA_EAGER_COMMIT")
            .ok()
            .and_then(|v| v.trim().parse::<std::ffi::c_long>().ok())
            .unwrap_or(0);
        // SAFETY: reading an option has no preconditions.
        let value = unsafe { libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) };
        assert_eq!(value, expected);
    }

    #[test]
    fn the_programs_own_pages_go_back_and_its_code_still_runs() {
        let before = resident_file_kib();
        let asked = release_start_up_pages();
        let after = resident_file_kib();
        assert!(asked > 0, "no read-only segment of the program was found");
        assert!(
            after < before,
            "resident file pages {before} KiB before, {after} KiB after"
        );
        // What was reclaimed is read back on use: reaching this line ran reclaimed code again.
        assert!(resident_file_kib() > 0);
    }
}
