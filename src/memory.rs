//! Handing memory the service freed back to the operating system, at the moments it has just
//! freed a lot: after the store is opened (sled's recovery reads its snapshot and log into
//! buffers it drops). Owns no state; knows only the allocator.
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
