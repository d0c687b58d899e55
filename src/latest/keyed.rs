//! [`KeyedBoard<K, T>`]: a [`Board`] whose slots are named by keys fixed at creation
//! (iceoryx2's blackboard, where the creator registers the key/value pairs and readers
//! look values up by key).
//!
//! # Layout
//!
//! A keyed board is a board segment (kind `Latest`, the same seqlock table) with a key
//! table after the slots: `params[2]` of the header is `size_of::<K>()`, `params[3]` the
//! FNV-1a tag of `K`'s name (0: unchecked), and the payload holds `slots` keys of
//! `size_of::<K>()` bytes each, starting at the first multiple of `max(8, align_of::<K>())`
//! after the table. The creator writes the keys before the segment is published; nobody
//! writes them afterwards.
//!
//! # Lookups and trust
//!
//! [`KeyedBoard::open`] copies the key table out of shared memory once (volatile loads)
//! and builds a private hash map from key to slot, so a lookup never reads shared memory
//! and a process that rewrites the key table later cannot affect handles already open.
//! A table that holds a key twice is reported as [`Error::Corrupt`]. A hostile writer
//! can therefore do no more than with a [`Board`]: make a newly opened handle map keys to
//! other slots (wrong values, as it could write wrong values anyway), or make it fail.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use bytemuck::Pod;

use super::cell::{Geometry, Table};
use super::{Board, Core, TABLE_VERSION, geometry};
use crate::error::{Error, Result};
use crate::segment::{ElemInfo, Kind, Layout, Segment};

/// Where the key table starts (bytes from the start of the payload) and how long it is.
fn key_region<K>(geo: &Geometry) -> Option<(usize, usize)> {
    let align = align_of::<K>().max(8);
    if align > 64 {
        return None;
    }
    let off = geo.total.next_multiple_of(align);
    let len = size_of::<K>().checked_mul(geo.slots)?;
    off.checked_add(len)?;
    Some((off, len))
}

/// The FNV-1a tag of `K`'s name, as [`ElemInfo::of`] records for element types.
fn key_tag<K: Pod>() -> u64 {
    ElemInfo::of::<K>(1).tag
}

/// Builds the key → slot index of a key table copied out of shared memory (`bytes`: the
/// keys back to back, any alignment). `Err(i)`: key `i` repeats an earlier one.
pub(crate) fn index_keys<K: Pod + Eq + Hash>(
    bytes: &[u8],
) -> std::result::Result<(Vec<K>, HashMap<K, u32>), usize> {
    let size = size_of::<K>();
    if size == 0 {
        return Ok((Vec::new(), HashMap::new()));
    }
    let keys: Vec<K> = bytes
        .chunks_exact(size)
        .map(bytemuck::pod_read_unaligned)
        .collect();
    let mut index = HashMap::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let slot = u32::try_from(i).map_err(|_| i)?;
        if index.insert(*k, slot).is_some() {
            return Err(i);
        }
    }
    Ok((keys, index))
}

/// A fixed table of latest values looked up by key: a [`Board`] whose slots are named by
/// keys of type `K` given at creation, with their initial values (iceoryx2's
/// blackboard). One writer for the whole board, any number of readers; every slot is a
/// seqlock as in [`Latest`](super::Latest). The set of keys never changes after creation.
///
/// ```
/// use shmkit::latest::KeyedBoard;
/// let name = format!("doc-keyed-{}", std::process::id());
/// let mut b = KeyedBoard::<u32, f64>::create(&name, &[(7, 0.5), (42, 1.5)])?;
/// b.write(&42, &2.5)?;
/// let r = KeyedBoard::<u32, f64>::open(&name)?; // e.g. in another process
/// assert_eq!(r.read(&42)?, (2.5, 1));
/// assert_eq!(r.read(&7)?, (0.5, 0));
/// assert!(r.read(&8).is_err()); // not a key of this board: an error
/// assert_eq!(r.keys(), &[7, 42]);
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
///
/// A lookup is a private hash-map probe (the key table is copied at open; see
/// `src/latest/keyed.rs`, "Lookups and trust"), then [`Board::read`]'s bounded seqlock
/// read. [`board`](Self::board) gives the slot-indexed view; [`Board::open`] also opens
/// a keyed board (ignoring the keys).
#[derive(Debug)]
pub struct KeyedBoard<K, T> {
    board: Board<T>,
    keys: Vec<K>,
    index: HashMap<K, u32>,
}

impl<K: Pod + Eq + Hash, T: Pod> KeyedBoard<K, T> {
    /// The layout of a keyed board of `keys` entries.
    pub fn layout(keys: u32) -> Result<Layout> {
        let geo = geometry::<T>("keyed board", u64::from(keys))?;
        Self::layout_of(&geo, "keyed board")
    }

    fn layout_of(geo: &Geometry, resource: &str) -> Result<Layout> {
        let bad = |why: &str| Error::invalid(resource, "create keyed board", why.to_owned());
        if size_of::<K>() == 0 {
            return Err(bad(
                "the key type is zero-sized: every key would be the same",
            ));
        }
        let (off, len) = key_region::<K>(geo)
            .ok_or_else(|| bad("the key type's alignment is over 64, or the table too large"))?;
        Ok(
            Layout::new(Kind::Latest, ElemInfo::of::<T>(geo.slots as u64))
                .with_payload_len((off + len) as u64)
                .with_params([
                    geo.slots as u64,
                    TABLE_VERSION,
                    size_of::<K>() as u64,
                    key_tag::<K>(),
                ]),
        )
    }

    /// The initialiser of a fresh keyed board: each slot holds its entry's value (version
    /// 0) and the key table lists the keys in the entries' order.
    fn init(
        geo: Geometry,
        entries: &[(K, T)],
    ) -> Result<impl FnOnce(&mut [u8]) -> Result<()> + '_> {
        let (off, len) = key_region::<K>(&geo).ok_or_else(|| {
            Error::invalid("keyed board", "create", "key table out of range".to_owned())
        })?;
        Ok(move |payload: &mut [u8]| {
            if payload.len() < off + len {
                return Err(Error::invalid(
                    "keyed board",
                    "initialise",
                    "payload shorter than the table and its keys",
                ));
            }
            // SAFETY: `payload` is valid for geo.total <= off bytes, 64-aligned, and nobody
            // else can see it before the segment is published.
            let table = unsafe { Table::new(payload.as_mut_ptr(), geo) };
            table.init();
            for (s, (_, v)) in entries.iter().enumerate() {
                // SAFETY: `v` is a T of geo.size bytes; s < slots (one slot per entry).
                unsafe { table.fill(s, bytemuck::bytes_of(v).as_ptr()) };
            }
            for (dst, (k, _)) in payload[off..off + len]
                .chunks_exact_mut(size_of::<K>())
                .zip(entries)
            {
                dst.copy_from_slice(bytemuck::bytes_of(k));
            }
            Ok(())
        })
    }

    /// Checks `entries` (at least one, no key twice) and returns the table's geometry.
    fn check_entries(resource: &str, entries: &[(K, T)]) -> Result<Geometry> {
        let n = u64::try_from(entries.len()).unwrap_or(u64::MAX);
        let geo = geometry::<T>(resource, n)?;
        let mut seen = HashMap::with_capacity(entries.len());
        for (i, (k, _)) in entries.iter().enumerate() {
            if let Some(j) = seen.insert(*k, i) {
                return Err(Error::invalid(
                    resource,
                    "create keyed board",
                    format!("entries {j} and {i} have the same key: keys must be distinct"),
                ));
            }
        }
        Ok(geo)
    }

    /// Creates a named keyed board holding `entries` (key, initial value), in that order
    /// (slot `i` is entry `i`). Keys must be distinct; there must be at least one.
    pub fn create(name: &str, entries: &[(K, T)]) -> Result<Self> {
        let geo = Self::check_entries(name, entries)?;
        let layout = Self::layout_of(&geo, name)?;
        let seg = Segment::create(name, &layout, Self::init(geo, entries)?)?;
        Self::from_segment(seg)
    }

    /// An anonymous keyed board shared with children forked afterwards.
    pub fn anonymous(entries: &[(K, T)]) -> Result<Self> {
        let geo = Self::check_entries("<anonymous segment>", entries)?;
        let layout = Self::layout_of(&geo, "<anonymous segment>")?;
        let seg = Segment::anonymous(&layout, Self::init(geo, entries)?)?;
        Self::from_segment(seg)
    }

    /// Opens a named keyed board, checking the value and key types.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// Views an opened segment as a keyed board: checks it as [`Board::from_segment`]
    /// does, then the key type (size and name tag) and the key table (in the payload, no
    /// key twice), which it copies into a private index.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        let board = Board::<T>::from_segment(seg)?;
        let core: &Core = &board.core;
        let seg = &core.seg;
        let raw = &seg.header().raw;
        let (size, tag) = (raw.params[2], raw.params[3]);
        if size == 0 {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "key table",
                expected: format!("keys of {} bytes", size_of::<K>()),
                found: "a board without keys (open it as a Board)".to_owned(),
            });
        }
        if size != size_of::<K>() as u64 {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "key size",
                expected: size_of::<K>().to_string(),
                found: size.to_string(),
            });
        }
        let want = key_tag::<K>();
        if tag != 0 && want != 0 && tag != want {
            return Err(Error::Mismatch {
                resource: seg.resource(),
                what: "key type",
                expected: format!("{want:#x} ({})", std::any::type_name::<K>()),
                found: format!("{tag:#x}"),
            });
        }
        let geo = core.table.geo;
        let (off, len) = key_region::<K>(&geo)
            .filter(|(off, len)| off + len <= seg.payload_len())
            .ok_or_else(|| {
                Error::corrupt(
                    seg.resource(),
                    format!(
                        "the key table ({} keys of {size} bytes) does not fit the payload ({} \
                         bytes)",
                        geo.slots,
                        seg.payload_len()
                    ),
                )
            })?;
        let mut bytes = vec![0u8; len];
        // SAFETY: payload[off..off + len] is mapped for as long as `seg` lives (checked
        // above against payload_len); `off` is a multiple of 8 from a 64-aligned payload;
        // `bytes` is private and `len` long. Volatile loads: another process may write it.
        unsafe { crate::queue::copy::load(seg.payload_ptr().add(off), bytes.as_mut_ptr(), len) };
        let (keys, index) = index_keys::<K>(&bytes).map_err(|i| {
            Error::corrupt(
                seg.resource(),
                format!(
                    "key {i} of the key table repeats an earlier key (the creator checks that \
                     keys are distinct: the table was rewritten)"
                ),
            )
        })?;
        Ok(KeyedBoard { board, keys, index })
    }

    /// The keys, in slot order.
    pub fn keys(&self) -> &[K] {
        &self.keys
    }

    /// The slot of `key`, if it is a key of this board.
    pub fn slot(&self, key: &K) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Whether `key` is a key of this board.
    pub fn contains_key(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false (a keyed board has at least one key).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn slot_of(&self, key: &K, op: &'static str) -> Result<u32> {
        self.slot(key).ok_or_else(|| {
            Error::invalid(
                self.board.segment().resource(),
                op,
                "not a key of this board (keys are fixed at creation: see keys())",
            )
        })
    }

    /// The slot-indexed view of the same board.
    pub fn board(&self) -> &Board<T> {
        &self.board
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        self.board.segment()
    }

    /// As [`Latest::set_retries`](super::Latest::set_retries).
    pub fn set_retries(&mut self, retries: u32) {
        self.board.set_retries(retries);
    }

    /// As [`Latest::read`](super::Latest::read), for `key`.
    pub fn read(&self, key: &K) -> Result<(T, u64)> {
        self.board.read(self.slot_of(key, "read keyed board")?)
    }

    /// As [`Latest::version`](super::Latest::version), for `key`.
    pub fn version(&self, key: &K) -> Result<u64> {
        self.board
            .version(self.slot_of(key, "keyed board version")?)
    }

    /// As [`Latest::wait_for_update`](super::Latest::wait_for_update), for `key`.
    pub fn wait_for_update(&self, key: &K, after: u64, timeout: Duration) -> Result<(T, u64)> {
        let s = self.slot_of(key, "wait for a keyed board value")?;
        self.board.wait_for_update(s, after, timeout)
    }

    /// As [`Latest::wait_for_update_async`](super::Latest::wait_for_update_async), for
    /// `key`.
    #[cfg(all(feature = "async", not(shmkit_loom)))]
    pub async fn wait_for_update_async(
        &self,
        key: &K,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<(T, u64)> {
        let s = self.slot_of(key, "wait for a keyed board value")?;
        self.board.wait_for_update_async(s, after, timeout).await
    }

    /// As [`Latest::write`](super::Latest::write), for `key` (one writer for the whole
    /// board).
    pub fn write(&mut self, key: &K, v: &T) -> Result<u64> {
        let s = self.slot_of(key, "write keyed board")?;
        self.board.write(s, v)
    }

    /// As [`Latest::update`](super::Latest::update), for `key`.
    pub fn update(&mut self, key: &K, f: impl FnOnce(&mut T)) -> Result<u64> {
        let s = self.slot_of(key, "update keyed board")?;
        self.board.update(s, f)
    }

    /// As [`Latest::claim_writer`](super::Latest::claim_writer).
    pub fn claim_writer(&mut self) -> Result<bool> {
        self.board.claim_writer()
    }

    /// As [`Latest::release_writer`](super::Latest::release_writer).
    pub fn release_writer(&mut self) {
        self.board.release_writer();
    }
}

#[cfg(all(test, not(shmkit_loom)))]
mod tests {
    use super::*;

    #[test]
    fn index_keys_finds_repeats_and_ignores_a_ragged_tail() {
        let b: Vec<u8> = [1u32, 2, 3].iter().flat_map(|k| k.to_le_bytes()).collect();
        let (keys, index) = index_keys::<u32>(&b).unwrap();
        assert_eq!(keys, [1, 2, 3]);
        assert_eq!(index[&3], 2);
        let b: Vec<u8> = [1u32, 2, 1].iter().flat_map(|k| k.to_le_bytes()).collect();
        assert_eq!(index_keys::<u32>(&b).unwrap_err(), 2);
        assert_eq!(index_keys::<u32>(&b[..5]).unwrap().0, [1]);
    }

    #[test]
    fn create_checks_entries() {
        assert!(KeyedBoard::<u64, u64>::anonymous(&[]).is_err());
        assert!(KeyedBoard::<u64, u64>::anonymous(&[(1, 0), (1, 2)]).is_err());
        assert!(KeyedBoard::<(), u64>::anonymous(&[((), 0)]).is_err());
        let mut b = KeyedBoard::<[u8; 3], u16>::anonymous(&[(*b"abc", 1), (*b"xyz", 2)]).unwrap();
        assert_eq!(b.read(b"xyz").unwrap(), (2, 0));
        assert_eq!(b.write(b"abc", &9).unwrap(), 1);
        assert_eq!(b.board().read(0).unwrap(), (9, 1));
        assert!(b.write(b"abd", &9).is_err());
        assert_eq!(b.slot(b"xyz"), Some(1));
    }
}
