//! A producer's lane: the items its writer encoded, handed to the protocol
//! without the connection's lock and without a lock of their own.
//!
//! A lane has one writer (the [`LaneWriter`], owned by the producer end that
//! writes, so the type system keeps it single) and one reader (the
//! [`LaneReader`] in the producer's protocol state, read under the
//! connection's lock). Items go into a chain of blocks: the writer copies an
//! item's bytes and length past what it published, then publishes the new
//! count with a release store; the reader takes everything up to the count it
//! loads with an acquire, and moves to the next block once the writer went
//! on. Nothing is written where the other side reads, so no lock is needed.
//!
//! The connection learns a lane has items through its `listed` flag: each
//! write sets it (one atomic swap) and, when it was clear, the writer lists
//! the lane with its host, which wakes the connection's writer task. The
//! reader clears the flag before it reads, so a write it does not see lists
//! the lane again: no item is left without someone coming for it.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The first block's capacity in bytes: a stream that writes a few items
/// keeps little; each next block doubles, up to [`MAX_BLOCK`].
const FIRST_BLOCK: usize = 512;
const MAX_BLOCK: usize = 16 << 10;

/// Item lengths a block has room for, per byte of data (small items are
/// what lanes are for: a block of 16 KiB holds up to 2,048 items).
const BYTES_PER_LEN: usize = 8;

/// One block of the chain: item bytes back to back, and their lengths.
struct Block {
    bytes: Box<[UnsafeCell<MaybeUninit<u8>>]>,
    lens: Box<[UnsafeCell<MaybeUninit<u32>>]>,
    /// Items published: their lengths and bytes are written and stay as they are.
    published: AtomicUsize,
    /// The block the writer went on to; set after its last publish here.
    next: OnceLock<Arc<Block>>,
}

// SAFETY: the writer writes only past `published` and the reader reads only
// below it (acquire/release on `published`), so no byte is written while
// another thread reads it.
unsafe impl Sync for Block {}
unsafe impl Send for Block {}

impl Block {
    fn new(bytes: usize) -> Arc<Block> {
        let lens = (bytes / BYTES_PER_LEN).max(16);
        Arc::new(Block {
            bytes: (0..bytes).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect(),
            lens: (0..lens).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect(),
            published: AtomicUsize::new(0),
            next: OnceLock::new(),
        })
    }

    /// The lengths of items `from..to` (all published).
    ///
    /// # Safety
    ///
    /// `to` must not pass what was published (loaded with acquire).
    unsafe fn lens(&self, from: usize, to: usize) -> &[u32] {
        // SAFETY: `UnsafeCell<MaybeUninit<u32>>` has the layout of `u32`;
        // the published lengths were written before `published` was released.
        unsafe { std::slice::from_raw_parts(self.lens.as_ptr().add(from).cast::<u32>(), to - from) }
    }

    /// Bytes `from..to` (all of published items).
    ///
    /// # Safety
    ///
    /// As for [`Block::lens`].
    unsafe fn bytes(&self, from: usize, to: usize) -> &[u8] {
        // SAFETY: as above, for bytes.
        unsafe { std::slice::from_raw_parts(self.bytes.as_ptr().add(from).cast::<u8>(), to - from) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // Unlinked one at a time: a long chain must not recurse.
        let mut next = self.next.take();
        while let Some(block) = next {
            next = match Arc::try_unwrap(block) {
                Ok(mut block) => block.next.take(),
                Err(_) => None,
            };
        }
    }
}

/// What both ends share: whether the lane is listed with its host.
struct Shared {
    listed: AtomicBool,
}

/// The one writer of a lane.
pub(crate) struct LaneWriter {
    shared: Arc<Shared>,
    block: Arc<Block>,
    /// Items and bytes written into `block`.
    items: usize,
    bytes: usize,
}

/// The one reader of a lane (the producer's protocol state).
pub(crate) struct LaneReader {
    shared: Arc<Shared>,
    block: Arc<Block>,
    /// Items and bytes of `block` already taken.
    items: usize,
    bytes: usize,
}

/// A new lane's two ends.
pub(crate) fn lane() -> (LaneWriter, LaneReader) {
    let shared = Arc::new(Shared { listed: AtomicBool::new(false) });
    let block = Block::new(FIRST_BLOCK);
    let writer = LaneWriter { shared: shared.clone(), block: block.clone(), items: 0, bytes: 0 };
    (writer, LaneReader { shared, block, items: 0, bytes: 0 })
}

impl LaneWriter {
    /// Appends one item; returns whether the lane must be listed with its
    /// host (it was not listed: nobody is coming for it yet).
    #[inline]
    pub(crate) fn push(&mut self, item: &[u8]) -> bool {
        if self.items == self.block.lens.len() || self.block.bytes.len() - self.bytes < item.len() {
            self.next_block(item.len());
        }
        // SAFETY: slots past `published` are the writer's alone (the reader
        // stops at `published`), and the checks above keep both in bounds.
        unsafe {
            let at = self.block.bytes.as_ptr().add(self.bytes).cast::<u8>().cast_mut();
            std::ptr::copy_nonoverlapping(item.as_ptr(), at, item.len());
            (*self.block.lens[self.items].get()).write(item.len() as u32);
        }
        self.items += 1;
        self.bytes += item.len();
        self.block.published.store(self.items, Ordering::Release);
        // A swap, not a load: a reader clearing the flag at this moment
        // either sees the item or leaves the flag for this write to find clear.
        !self.shared.listed.swap(true, Ordering::AcqRel)
    }

    /// Goes on to a new block with room for an item of `len` bytes.
    #[cold]
    fn next_block(&mut self, len: usize) {
        let size = (self.block.bytes.len() * 2).clamp(FIRST_BLOCK, MAX_BLOCK).max(len);
        let block = Block::new(size);
        // Set once, after the last publish here (the reader re-reads
        // `published` after it sees `next`).
        let _ = self.block.next.set(block.clone());
        self.block = block;
        self.items = 0;
        self.bytes = 0;
    }
}

impl LaneReader {
    /// Takes every item published since the last take: `f` gets runs of
    /// them (their bytes back to back, and their lengths), in order.
    /// Clears the listed flag first, so a write it misses lists the lane again.
    pub(crate) fn take(&mut self, mut f: impl FnMut(&[u8], &[u32])) {
        self.shared.listed.swap(false, Ordering::AcqRel);
        loop {
            let published = self.block.published.load(Ordering::Acquire);
            if published > self.items {
                // SAFETY: items up to `published` were published (acquired above).
                let lens = unsafe { self.block.lens(self.items, published) };
                let len = lens.iter().map(|&len| len as usize).sum::<usize>();
                // SAFETY: their bytes directly follow what was taken before.
                let bytes = unsafe { self.block.bytes(self.bytes, self.bytes + len) };
                f(bytes, lens);
                self.items = published;
                self.bytes += len;
            }
            let Some(next) = self.block.next.get() else { return };
            // The writer set `next` after its last publish in this block:
            // having seen `next`, one more look finds everything.
            if self.block.published.load(Ordering::Acquire) > self.items {
                continue;
            }
            let next = next.clone();
            self.block = next;
            self.items = 0;
            self.bytes = 0;
        }
    }
}

/// A value taken at most once, by any thread, without a lock (the lane's
/// writer waits here between the protocol that makes it and the producer
/// end that writes).
pub(crate) struct TakeOnce<T>(AtomicPtr<T>, PhantomData<Box<T>>);

impl<T> TakeOnce<T> {
    #[cfg(test)]
    fn new(value: T) -> Self {
        TakeOnce(AtomicPtr::new(Box::into_raw(Box::new(value))), PhantomData)
    }

    /// Puts `value` in (dropping what was there).
    pub(crate) fn put(&self, value: T) {
        let old = self.0.swap(Box::into_raw(Box::new(value)), Ordering::AcqRel);
        // SAFETY: as in `take`.
        (!old.is_null()).then(|| drop(unsafe { Box::from_raw(old) }));
    }

    /// The value, the first time; `None` after.
    pub(crate) fn take(&self) -> Option<T> {
        let ptr = self.0.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a non-null pointer came from `Box::into_raw` and is
        // swapped out exactly once.
        (!ptr.is_null()).then(|| *unsafe { Box::from_raw(ptr) })
    }
}

impl<T> Default for TakeOnce<T> {
    fn default() -> Self {
        TakeOnce(AtomicPtr::new(std::ptr::null_mut()), PhantomData)
    }
}

impl<T> Drop for TakeOnce<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(reader: &mut LaneReader) -> Vec<Vec<u8>> {
        let mut items = Vec::new();
        reader.take(|bytes, lens| {
            let mut at = 0;
            for &len in lens {
                items.push(bytes[at..at + len as usize].to_vec());
                at += len as usize;
            }
            assert_eq!(at, bytes.len());
        });
        items
    }

    #[test]
    fn items_come_out_in_order_across_blocks() {
        let (mut writer, mut reader) = lane();
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for i in 0..20_000u32 {
            // Lengths from 0 to 4 KiB, so blocks fill by bytes and by count.
            let item = vec![i as u8; if i % 97 == 0 { 4096 } else { (i % 13) as usize }];
            writer.push(&item);
            expected.push(item);
            if i % 777 == 0 {
                got.extend(take_all(&mut reader));
            }
        }
        got.extend(take_all(&mut reader));
        assert_eq!(got, expected);
        assert!(take_all(&mut reader).is_empty());
    }

    #[test]
    fn only_the_first_write_after_a_take_lists_the_lane() {
        let (mut writer, mut reader) = lane();
        assert!(writer.push(b"a"));
        assert!(!writer.push(b"b"));
        assert_eq!(take_all(&mut reader).len(), 2);
        assert!(writer.push(b"c"));
        assert!(!writer.push(b"d"));
    }

    #[test]
    fn an_item_larger_than_a_block_gets_a_block_of_its_own() {
        let (mut writer, mut reader) = lane();
        let big = vec![7u8; MAX_BLOCK + 100];
        writer.push(b"x");
        writer.push(&big);
        writer.push(b"y");
        assert_eq!(take_all(&mut reader), vec![b"x".to_vec(), big, b"y".to_vec()]);
    }

    #[test]
    fn a_reader_on_another_thread_sees_every_item_once() {
        let (mut writer, mut reader) = lane();
        const N: u32 = 200_000;
        let done = Arc::new(AtomicBool::new(false));
        let reading = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut next = 0u32;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    for item in take_all(&mut reader) {
                        assert_eq!(item, next.to_le_bytes()[..(next % 4 + 1) as usize].to_vec());
                        next += 1;
                    }
                    if finished {
                        return next;
                    }
                }
            })
        };
        for i in 0..N {
            writer.push(&i.to_le_bytes()[..(i % 4 + 1) as usize]);
        }
        done.store(true, Ordering::Release);
        assert_eq!(reading.join().unwrap(), N);
    }

    #[test]
    fn take_once_gives_its_value_once_and_frees_it_otherwise() {
        let value = Arc::new(());
        let slot = TakeOnce::new(value.clone());
        assert_eq!(Arc::strong_count(&value), 2);
        assert!(slot.take().is_some());
        assert!(slot.take().is_none());
        let slot = TakeOnce::new(value.clone());
        drop(slot);
        assert_eq!(Arc::strong_count(&value), 1);
    }
}
