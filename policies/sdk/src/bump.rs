//! The policies' allocator on wasm32: a bump allocator that never frees.
//!
//! Every evaluation runs in a fresh instance that is discarded after one call, so freeing is
//! wasted work: dlmalloc's bookkeeping costs more than it saves when the whole heap dies
//! milliseconds later. Allocation here is an add and a compare; a reallocation of the most
//! recent block (a growing `String` or `Vec` while JSON is parsed) extends it in place.
//! Linear memory is grown in chunks of at least 1 MiB, bounded by the host's memory cap.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 64 * 1024;
/// Pages added per `memory.grow` at the least: each grow is a host call.
const MIN_GROW_PAGES: usize = 16;

/// A bump allocator over memory obtained with `memory.grow`.
pub struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
    last: Cell<usize>,
}

// SAFETY: wasm32 policies are single-threaded (no threads proposal, no shared memory), so the
// cells are never accessed concurrently.
unsafe impl Sync for Bump {}

impl Bump {
    /// An allocator that has not claimed any memory yet.
    pub const fn new() -> Self {
        Self {
            next: Cell::new(0),
            end: Cell::new(0),
            last: Cell::new(0),
        }
    }

    /// Makes sure `[start, start + size)` fits, growing memory. Returns the usable start.
    fn reserve(&self, align: usize, size: usize) -> Option<usize> {
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if end <= self.end.get() && self.end.get() != 0 {
            return Some(start);
        }
        let pages = size.checked_add(align)?.div_ceil(PAGE).max(MIN_GROW_PAGES);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return None;
        }
        let base = previous * PAGE;
        if base != self.end.get() {
            // Not contiguous with our last chunk (first use, or someone else grew memory).
            self.next.set(base);
        }
        self.end.set(base + pages * PAGE);
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        Some(start)
    }
}

impl Default for Bump {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block returned lies inside memory this allocator obtained from `memory.grow`,
// is aligned as asked, and is never handed out twice (`next` only moves forward).
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.reserve(layout.align(), layout.size()) {
            Some(start) => {
                self.next.set(start + layout.size());
                self.last.set(start);
                start as *mut u8
            }
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let addr = ptr as usize;
        // The most recent block can grow in place while the current chunk has room.
        if addr == self.last.get() && addr + new_size <= self.end.get() {
            self.next.set(addr + new_size);
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: `new_layout` has a non-zero size whenever `layout` had (GlobalAlloc contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and do not overlap
            // (the new one starts at or after the old one's end).
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

/// The allocator of every policy built with the SDK for wasm32.
#[global_allocator]
static ALLOCATOR: Bump = Bump::new();
