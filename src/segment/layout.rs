//! What a caller asks a segment to hold: kind, element type, payload size.

use bytemuck::Pod;

use super::header::{Kind, TYPE_NAME_LEN, fnv1a64};

/// Size, alignment, count and identity of the elements of a typed segment.
///
/// ```
/// use shmkit::ElemInfo;
/// let e = ElemInfo::of::<u64>(4);
/// assert_eq!((e.size, e.align, e.count), (8, 8, 4));
/// assert_eq!(e.type_name(), "u64");
/// assert_ne!(e.tag, 0);
/// let anon = ElemInfo::of::<u64>(4).untagged();
/// assert_eq!(anon.tag, 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElemInfo {
    /// `size_of::<T>()`.
    pub size: u64,
    /// `align_of::<T>()`.
    pub align: u64,
    /// Number of elements.
    pub count: u64,
    /// FNV-1a 64 of the type name; 0 means "do not check".
    pub tag: u64,
    /// The type name, NUL-padded ASCII (shown by `shmkit ls`).
    pub name: [u8; TYPE_NAME_LEN],
}

impl ElemInfo {
    /// Describes `count` elements of `T`, named after the last path segment of
    /// `std::any::type_name::<T>()` (e.g. `u64`, `Point`).
    ///
    /// `type_name` is not guaranteed stable across compiler versions; for types shared
    /// between separately built programs, name them yourself with [`ElemInfo::named`].
    /// Size, alignment and count are always checked; the tag only when both sides have one.
    pub fn of<T: Pod>(count: u64) -> Self {
        Self::sized(size_of::<T>() as u64, align_of::<T>() as u64, count)
            .named(short_type_name(std::any::type_name::<T>()))
    }

    /// Untyped bytes: size 1, alignment 1, untagged.
    pub fn bytes(count: u64) -> Self {
        Self::sized(1, 1, count)
    }

    fn sized(size: u64, align: u64, count: u64) -> Self {
        ElemInfo {
            size,
            align,
            count,
            tag: 0,
            name: [0; TYPE_NAME_LEN],
        }
    }

    /// Names the type (first 32 printable ASCII bytes are kept) and tags it with the
    /// name's hash.
    pub fn named(mut self, name: &str) -> Self {
        self.name = [0; TYPE_NAME_LEN];
        let kept: Vec<u8> = name
            .bytes()
            .filter(|b| (0x20..=0x7e).contains(b))
            .take(TYPE_NAME_LEN)
            .collect();
        self.name[..kept.len()].copy_from_slice(&kept);
        self.tag = if kept.is_empty() { 0 } else { fnv1a64(&kept) };
        self
    }

    /// Drops the type tag: only size, alignment and count will be checked.
    pub fn untagged(mut self) -> Self {
        self.tag = 0;
        self
    }

    /// The recorded type name.
    pub fn type_name(&self) -> &str {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TYPE_NAME_LEN);
        std::str::from_utf8(&self.name[..end]).unwrap_or("")
    }

    /// Total bytes of the elements, if it does not overflow.
    pub fn total_bytes(&self) -> Option<u64> {
        self.size.checked_mul(self.count)
    }
}

fn short_type_name(full: &str) -> &str {
    // "alloc::vec::Vec<u8>" -> "Vec<u8>"; "my::Point" -> "Point"; "[u8; 4]" stays.
    let generic_start = full.find('<').unwrap_or(full.len());
    match full[..generic_start].rfind("::") {
        Some(i) => &full[i + 2..],
        None => full,
    }
}

/// Everything that defines a segment's contents: kind, element info, payload length and
/// kind-specific flags and parameters.
///
/// ```
/// use shmkit::{ElemInfo, Layout, segment::Kind};
/// let l = Layout::new(Kind::Array, ElemInfo::of::<u32>(10));
/// assert_eq!(l.payload_len, 40);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// What the segment holds.
    pub kind: Kind,
    /// The typed view.
    pub elem: ElemInfo,
    /// Payload bytes (at least `elem.size * elem.count`).
    pub payload_len: u64,
    /// Kind-specific flags (e.g. a queue's mode), checked by the primitive on open.
    pub flags: u32,
    /// Kind-specific parameters (capacities, slot sizes), checked by the primitive.
    pub params: [u64; 4],
}

impl Layout {
    /// A layout whose payload is exactly the elements (saturating on overflow, which
    /// creation then refuses).
    pub fn new(kind: Kind, elem: ElemInfo) -> Self {
        let payload_len = elem.total_bytes().unwrap_or(u64::MAX);
        Layout {
            kind,
            elem,
            payload_len,
            flags: 0,
            params: [0; 4],
        }
    }

    /// Sets the payload length (for primitives with control data beside the elements).
    pub fn with_payload_len(mut self, payload_len: u64) -> Self {
        self.payload_len = payload_len;
        self
    }

    /// Sets the kind-specific flags.
    pub fn with_flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the kind-specific parameters.
    pub fn with_params(mut self, params: [u64; 4]) -> Self {
        self.params = params;
        self
    }
}
