//! The global allocator (the binary's, not the library's): mimalloc, called
//! the way it is fast.
//!
//! `mimalloc::MiMalloc` passes every request to the aligned entry points.
//! mimalloc v3 answers those from its fast path only for blocks up to 1 KiB
//! whose next free block happens to be aligned; the rest take a generic path
//! that over-allocates every block whose size class is not a power of two
//! (several times the work of the fast path, and a larger block, for
//! allocations every request makes on each sidecar). Known upstream:
//! mimalloc_rust PR #170. Every mimalloc block of 16 bytes or more is 16-byte
//! aligned (smaller ones 8), so a request aligned to at most 16 and to no
//! more than its size is served by the plain calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// mimalloc's own alignment guarantee (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator.
pub struct Allocator;

/// Whether a plain (unaligned) mimalloc block of `size` bytes is aligned enough.
fn plain_fits(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every call is mimalloc's, and a block comes from an aligned call
// unless `plain_fits` says a plain block meets the layout's alignment.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain_fits(layout.size(), layout.align()) {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain_fits(layout.size(), layout.align()) {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_fits(new_size, layout.align()) {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 4 KiB (and some large ones) at every alignment up to
    /// a page: the block is aligned, holds its bytes, and keeps them through
    /// a realloc to the next size up and down.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes_through_realloc() {
        let sizes = (1..=4096).chain([8191, 8192, 65_535, 1 << 20, (4 << 20) + 3]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = Allocator.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc {size} bytes, align {align}");
                    std::ptr::write_bytes(p, 0xA5, size);

                    let grown = size + size / 3 + 1;
                    let q = Allocator.realloc(p, layout, grown);
                    assert_eq!(q as usize % align, 0, "realloc to {grown}, align {align}");
                    assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 0xA5));

                    let shrunk = (size / 2).max(1);
                    let grown_layout = Layout::from_size_align(grown, align).unwrap();
                    let r = Allocator.realloc(q, grown_layout, shrunk);
                    assert_eq!(r as usize % align, 0, "realloc to {shrunk}, align {align}");
                    assert!(std::slice::from_raw_parts(r, shrunk).iter().all(|&b| b == 0xA5));
                    Allocator.dealloc(r, Layout::from_size_align(shrunk, align).unwrap());

                    let z = Allocator.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "alloc_zeroed {size} bytes, align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    Allocator.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn only_small_alignments_within_the_size_take_the_plain_calls() {
        assert!(plain_fits(8, 8));
        assert!(plain_fits(24, 8));
        assert!(plain_fits(48, 16));
        assert!(plain_fits(1500, 8));
        assert!(!plain_fits(8, 16), "an 8-byte block is only 8-aligned");
        assert!(!plain_fits(64, 32));
        assert!(!plain_fits(4096, 4096));
    }
}
