//! The segment header: a fixed 256-byte `#[repr(C)]` record at offset 0 of every shmkit
//! segment, and its validation.
//!
//! [`Header::parse`] is a pure, total function over bytes: no system calls, no `unsafe`,
//! no panics, whatever the input. It is the target of `fuzz/fuzz_targets/header.rs`.
//!
//! # Layout (format version 1, little or big endian as the ABI tag says)
//!
//! | offset | size | field | notes |
//! |-------:|-----:|-------|-------|
//! | 0 | 8 | `magic` | `b"SHMKSEG\0"` |
//! | 8 | 4 | `version` | [`FORMAT_VERSION`] |
//! | 12 | 4 | `kind` | [`Kind`] |
//! | 16 | 4 | `state` | [`State`], the only field written after publication (atomically) |
//! | 20 | 4 | `flags` | bit 31 [`FLAG_PERSISTENT`]; the rest kind-specific (e.g. queue mode) |
//! | 24 | 4 | `creator_pid` | |
//! | 28 | 4 | `header_len` | 256 |
//! | 32 | 8 | `creator_start_time` | `/proc/PID/stat` field 22: survives pid reuse |
//! | 40 | 8 | `created_unix_ns` | |
//! | 48 | 8 | `total_len` | must equal the file length |
//! | 56 | 8 | `payload_offset` | multiple of max(64, `elem_align`), at least 256 |
//! | 64 | 8 | `payload_len` | |
//! | 72 | 24 | `elem_size`, `elem_align`, `elem_count` | the typed view |
//! | 96 | 8 | `type_tag` | FNV-1a of the type name, 0 for none |
//! | 104 | 8 | `abi_tag` | [`ABI_TAG`]: pointer width, endianness, pthread sizes, arch |
//! | 112 | 8 | `checksum` | FNV-1a over all 256 bytes with `state` and `checksum` zeroed |
//! | 120 | 8 | `boot_tag` | FNV-1a of the creator's boot id |
//! | 128 | 32 | `type_name` | ASCII, NUL-padded |
//! | 160 | 32 | `params` | four kind-specific `u64` (capacities, modes) |
//! | 192 | 64 | reserved | must be zero |

use std::fmt;
use std::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"SHMKSEG\0";
/// The header format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 256;
/// Payloads start at a multiple of this (a cache line, and enough for every `Pod` type
/// shmkit accepts).
pub const PAYLOAD_ALIGN: usize = 64;
/// The largest element alignment a typed view may ask for (one page).
pub const MAX_ELEM_ALIGN: u64 = 4096;
/// Bytes available for the type name.
pub const TYPE_NAME_LEN: usize = 32;
/// Bit of `flags` common to every kind: the object was created persistent (see
/// `SegmentOptions::persistent`); `shmkit gc` leaves it alone unless asked. The other bits
/// are kind-specific.
pub const FLAG_PERSISTENT: u32 = 1 << 31;

/// The on-disk (in-memory) header record.
///
/// Its fields are plain integers; `state` is accessed as an `AtomicU32` in a mapped
/// segment and read as a plain `u32` in a snapshot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct RawHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// [`Kind`] as a number.
    pub kind: u32,
    /// [`State`] as a number.
    pub state: u32,
    /// Kind-specific flags.
    pub flags: u32,
    /// Pid of the creating process.
    pub creator_pid: u32,
    /// [`HEADER_LEN`].
    pub header_len: u32,
    /// The creator's start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub creator_start_time: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// Length of the whole segment (header included).
    pub total_len: u64,
    /// Offset of the payload.
    pub payload_offset: u64,
    /// Length of the payload.
    pub payload_len: u64,
    /// Size of one element of the typed view.
    pub elem_size: u64,
    /// Alignment of one element.
    pub elem_align: u64,
    /// Number of elements.
    pub elem_count: u64,
    /// FNV-1a 64 of the type name, or 0.
    pub type_tag: u64,
    /// [`ABI_TAG`] of the creating build.
    pub abi_tag: u64,
    /// FNV-1a 64 over the header with `state` and `checksum` zeroed.
    pub checksum: u64,
    /// FNV-1a 64 of the creator's `/proc/sys/kernel/random/boot_id`.
    pub boot_tag: u64,
    /// ASCII type name, NUL-padded.
    pub type_name: [u8; TYPE_NAME_LEN],
    /// Kind-specific parameters.
    pub params: [u64; 4],
    /// Zero.
    pub reserved: [u8; 64],
}

const _: () = assert!(size_of::<RawHeader>() == HEADER_LEN);
const _: () = assert!(offset_of!(RawHeader, state) == STATE_OFFSET);
const _: () = assert!(offset_of!(RawHeader, checksum) == 112);
const _: () = assert!(offset_of!(RawHeader, reserved) == 192);

/// Byte offset of the atomic `state` word.
pub const STATE_OFFSET: usize = 16;

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// Untyped bytes.
    Bytes,
    /// One `Value<T>`.
    Value,
    /// An `Array<T>`.
    Array,
    /// A robust `Mutex<T>`.
    Mutex,
    /// A condition variable.
    Condvar,
    /// A reader-writer lock.
    RwLock,
    /// A barrier.
    Barrier,
    /// A semaphore.
    Semaphore,
    /// An event.
    Event,
    /// A fixed-slot queue.
    Queue,
    /// A variable-length byte queue.
    ByteQueue,
    /// A user-defined layout.
    Custom,
    /// A seqlock table of latest values (`Latest<T>`, `Board<T>`).
    Latest,
    /// A publish/subscribe topic of fixed-size messages.
    Topic,
    /// A publish/subscribe topic of variable-length byte messages.
    ByteTopic,
    /// A kind this build does not know (written by a newer shmkit).
    Unknown(u32),
}

impl Kind {
    /// The number stored in the header.
    pub const fn to_raw(self) -> u32 {
        match self {
            Kind::Bytes => 1,
            Kind::Value => 2,
            Kind::Array => 3,
            Kind::Mutex => 4,
            Kind::Condvar => 5,
            Kind::RwLock => 6,
            Kind::Barrier => 7,
            Kind::Semaphore => 8,
            Kind::Event => 9,
            Kind::Queue => 10,
            Kind::ByteQueue => 11,
            Kind::Custom => 12,
            Kind::Latest => 16,
            Kind::Topic => 14,
            Kind::ByteTopic => 15,
            Kind::Unknown(n) => n,
        }
    }

    /// The kind for a stored number.
    pub const fn from_raw(n: u32) -> Kind {
        match n {
            1 => Kind::Bytes,
            2 => Kind::Value,
            3 => Kind::Array,
            4 => Kind::Mutex,
            5 => Kind::Condvar,
            6 => Kind::RwLock,
            7 => Kind::Barrier,
            8 => Kind::Semaphore,
            9 => Kind::Event,
            10 => Kind::Queue,
            11 => Kind::ByteQueue,
            12 => Kind::Custom,
            16 => Kind::Latest,
            14 => Kind::Topic,
            15 => Kind::ByteTopic,
            n => Kind::Unknown(n),
        }
    }

    /// A short lower-case name, as `shmkit ls` prints it.
    pub fn name(self) -> String {
        match self {
            Kind::Bytes => "bytes".into(),
            Kind::Value => "value".into(),
            Kind::Array => "array".into(),
            Kind::Mutex => "mutex".into(),
            Kind::Condvar => "condvar".into(),
            Kind::RwLock => "rwlock".into(),
            Kind::Barrier => "barrier".into(),
            Kind::Semaphore => "semaphore".into(),
            Kind::Event => "event".into(),
            Kind::Queue => "queue".into(),
            Kind::ByteQueue => "bytequeue".into(),
            Kind::Custom => "custom".into(),
            Kind::Latest => "latest".into(),
            Kind::Topic => "topic".into(),
            Kind::ByteTopic => "bytetopic".into(),
            Kind::Unknown(n) => format!("unknown({n})"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Initialisation state of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Zero-filled, nothing written yet.
    Empty,
    /// The creator is writing the header and payload.
    Initializing,
    /// Published; safe to use.
    Ready,
    /// The creator died while initialising.
    Abandoned,
}

impl State {
    /// The number stored in the header.
    pub const fn to_raw(self) -> u32 {
        match self {
            State::Empty => 0,
            State::Initializing => 1,
            State::Ready => 2,
            State::Abandoned => 3,
        }
    }

    /// The state for a stored number, if it is one.
    pub const fn from_raw(n: u32) -> Option<State> {
        match n {
            0 => Some(State::Empty),
            1 => Some(State::Initializing),
            2 => Some(State::Ready),
            3 => Some(State::Abandoned),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Empty => "empty",
            State::Initializing => "initializing",
            State::Ready => "ready",
            State::Abandoned => "abandoned",
        })
    }
}

/// Why a header was refused. Each variant names the one check that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("too short for a shmkit header: {len} bytes, need {HEADER_LEN}")]
    TooShort {
        /// Bytes available.
        len: u64,
    },
    /// Not a shmkit segment.
    #[error("not a shmkit segment (bad magic {found:02x?})")]
    BadMagic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// Written by another format version.
    #[error("header format version {found}, this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion {
        /// The stored version.
        found: u32,
    },
    /// The header length field is not [`HEADER_LEN`].
    #[error("header length field is {found}, expected {HEADER_LEN}")]
    BadHeaderLen {
        /// The stored value.
        found: u32,
    },
    /// Created by a build with another ABI (pointer width, endianness, pthread sizes).
    #[error("created by an incompatible build: ABI tag {found:#018x} ({}), this build is {expected:#018x} ({})", describe_abi(*found), describe_abi(*expected))]
    AbiMismatch {
        /// The stored tag.
        found: u64,
        /// This build's tag.
        expected: u64,
    },
    /// The state word is not a known state.
    #[error("state word {found} is not a valid state")]
    BadState {
        /// The stored value.
        found: u32,
    },
    /// The recorded length disagrees with the object's length.
    #[error("header says {header} bytes but the object has {actual}")]
    LengthMismatch {
        /// The stored length.
        header: u64,
        /// The object's length.
        actual: u64,
    },
    /// The payload offset is inside the header or not aligned.
    #[error("payload offset {found} is not a multiple of {PAYLOAD_ALIGN} at or after {HEADER_LEN}")]
    BadPayloadOffset {
        /// The stored offset.
        found: u64,
    },
    /// The payload extends past the end of the segment.
    #[error("payload {offset}+{len} runs past the segment end {total}")]
    PayloadOutOfBounds {
        /// Payload offset.
        offset: u64,
        /// Payload length.
        len: u64,
        /// Segment length.
        total: u64,
    },
    /// The element alignment is zero, not a power of two, or too large.
    #[error("element alignment {found} is not a power of two up to {MAX_ELEM_ALIGN}")]
    BadAlignment {
        /// The stored alignment.
        found: u64,
    },
    /// The element size is not a multiple of its alignment.
    #[error("element size {size} is not a multiple of its alignment {align}")]
    BadElementSize {
        /// Element size.
        size: u64,
        /// Element alignment.
        align: u64,
    },
    /// The elements do not fit the payload.
    #[error("{count} elements of {size} bytes do not fit a payload of {payload_len} bytes")]
    ElementsOutOfBounds {
        /// Element size.
        size: u64,
        /// Element count.
        count: u64,
        /// Payload length.
        payload_len: u64,
    },
    /// The type name is not NUL-padded printable ASCII.
    #[error("type name is not NUL-padded printable ASCII")]
    BadTypeName,
    /// Reserved bytes are not zero.
    #[error("reserved bytes are not zero")]
    ReservedNotZero,
    /// The checksum does not match: some immutable field was changed after creation.
    #[error(
        "checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): the header was modified after creation"
    )]
    ChecksumMismatch {
        /// The stored checksum.
        stored: u64,
        /// The checksum of the bytes.
        computed: u64,
    },
}

impl HeaderError {
    /// True when the object is simply not a shmkit segment (made by another program).
    pub fn is_foreign(&self) -> bool {
        matches!(
            self,
            HeaderError::BadMagic { .. } | HeaderError::TooShort { .. }
        )
    }

    /// What to do about it, for error messages.
    pub fn advice(&self, resource: &str) -> String {
        match self {
            e if e.is_foreign() => format!(
                "if it was made by another program, open it without a header (`Array::open_foreign`, `shmkit array dump --raw --type T {resource}`)"
            ),
            HeaderError::UnsupportedVersion { .. } | HeaderError::AbiMismatch { .. } => {
                "open it with the shmkit build (version, architecture) that created it".into()
            }
            _ => format!(
                "the segment is corrupt; remove it with `shmkit rm {resource}` and recreate it"
            ),
        }
    }
}

/// A validated header, as read from a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The raw record (with the `state` seen when it was read).
    pub raw: RawHeader,
}

impl Header {
    /// Parses and validates the first [`HEADER_LEN`] bytes of `bytes` as a header for an
    /// object `object_len` bytes long.
    ///
    /// Pure and total: any input gives `Ok` or a specific [`HeaderError`], never a panic.
    ///
    /// ```
    /// use shmkit::segment::{Header, HeaderError};
    /// assert!(matches!(Header::parse(&[0u8; 10], 10), Err(HeaderError::TooShort { .. })));
    /// ```
    pub fn parse(bytes: &[u8], object_len: u64) -> Result<Header, HeaderError> {
        let Some(head) = bytes.get(..HEADER_LEN) else {
            return Err(HeaderError::TooShort {
                len: bytes.len() as u64,
            });
        };
        let raw: RawHeader = bytemuck::pod_read_unaligned(head);
        if raw.magic != MAGIC {
            return Err(HeaderError::BadMagic { found: raw.magic });
        }
        if raw.version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion { found: raw.version });
        }
        if raw.header_len as usize != HEADER_LEN {
            return Err(HeaderError::BadHeaderLen {
                found: raw.header_len,
            });
        }
        if raw.abi_tag != ABI_TAG {
            return Err(HeaderError::AbiMismatch {
                found: raw.abi_tag,
                expected: ABI_TAG,
            });
        }
        if State::from_raw(raw.state).is_none() {
            return Err(HeaderError::BadState { found: raw.state });
        }
        if raw.total_len != object_len {
            return Err(HeaderError::LengthMismatch {
                header: raw.total_len,
                actual: object_len,
            });
        }
        if raw.payload_offset < HEADER_LEN as u64 || raw.payload_offset % PAYLOAD_ALIGN as u64 != 0
        {
            return Err(HeaderError::BadPayloadOffset {
                found: raw.payload_offset,
            });
        }
        match raw.payload_offset.checked_add(raw.payload_len) {
            Some(end) if end <= raw.total_len => {}
            _ => {
                return Err(HeaderError::PayloadOutOfBounds {
                    offset: raw.payload_offset,
                    len: raw.payload_len,
                    total: raw.total_len,
                });
            }
        }
        if !raw.elem_align.is_power_of_two() || raw.elem_align > MAX_ELEM_ALIGN {
            return Err(HeaderError::BadAlignment {
                found: raw.elem_align,
            });
        }
        // Typed views form references to the payload: it must be aligned for the element
        // (the mapping itself is page-aligned, and elem_align <= 4096).
        if raw.payload_offset % raw.elem_align != 0 {
            return Err(HeaderError::BadPayloadOffset {
                found: raw.payload_offset,
            });
        }
        if raw.elem_size % raw.elem_align != 0 {
            return Err(HeaderError::BadElementSize {
                size: raw.elem_size,
                align: raw.elem_align,
            });
        }
        match raw.elem_size.checked_mul(raw.elem_count) {
            Some(n) if n <= raw.payload_len => {}
            _ => {
                return Err(HeaderError::ElementsOutOfBounds {
                    size: raw.elem_size,
                    count: raw.elem_count,
                    payload_len: raw.payload_len,
                });
            }
        }
        if !type_name_is_valid(&raw.type_name) {
            return Err(HeaderError::BadTypeName);
        }
        if raw.reserved.iter().any(|&b| b != 0) {
            return Err(HeaderError::ReservedNotZero);
        }
        let computed = checksum(&raw);
        if raw.checksum != computed {
            return Err(HeaderError::ChecksumMismatch {
                stored: raw.checksum,
                computed,
            });
        }
        Ok(Header { raw })
    }

    /// The kind-specific flags (without [`FLAG_PERSISTENT`]).
    pub fn kind_flags(&self) -> u32 {
        self.raw.flags & !FLAG_PERSISTENT
    }

    /// True if the creator asked for the object to persist until removed explicitly
    /// (`SegmentOptions::persistent`): `shmkit gc` leaves it alone unless asked.
    pub fn is_persistent(&self) -> bool {
        self.raw.flags & FLAG_PERSISTENT != 0
    }

    /// What the segment holds.
    pub fn kind(&self) -> Kind {
        Kind::from_raw(self.raw.kind)
    }

    /// The state when the header was read.
    pub fn state(&self) -> State {
        // parse() refused any other value.
        State::from_raw(self.raw.state).unwrap_or(State::Abandoned)
    }

    /// The type name recorded at creation (may be empty).
    pub fn type_name(&self) -> &str {
        let end = self
            .raw
            .type_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TYPE_NAME_LEN);
        // parse() checked that the name is ASCII.
        std::str::from_utf8(&self.raw.type_name[..end]).unwrap_or("")
    }

    /// Payload offset and length, already checked to lie within `total_len`.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        // Bounded by total_len, which equals the object length, which is mapped, so it
        // fits in usize.
        let start = self.raw.payload_offset as usize;
        start..start + self.raw.payload_len as usize
    }
}

/// Builds a complete, checksummed header record (state [`State::Initializing`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    kind: Kind,
    layout: &super::Layout,
    total_len: u64,
    payload_offset: u64,
    creator_pid: u32,
    creator_start_time: u64,
    created_unix_ns: u64,
    boot_tag: u64,
) -> RawHeader {
    let mut raw = RawHeader {
        magic: MAGIC,
        version: FORMAT_VERSION,
        kind: kind.to_raw(),
        state: State::Initializing.to_raw(),
        flags: layout.flags,
        creator_pid,
        header_len: HEADER_LEN as u32,
        creator_start_time,
        created_unix_ns,
        total_len,
        payload_offset,
        payload_len: layout.payload_len,
        elem_size: layout.elem.size,
        elem_align: layout.elem.align,
        elem_count: layout.elem.count,
        type_tag: layout.elem.tag,
        abi_tag: ABI_TAG,
        checksum: 0,
        boot_tag,
        type_name: layout.elem.name,
        params: layout.params,
        reserved: [0; 64],
    };
    raw.checksum = checksum(&raw);
    raw
}

fn type_name_is_valid(name: &[u8; TYPE_NAME_LEN]) -> bool {
    let end = name.iter().position(|&b| b == 0).unwrap_or(TYPE_NAME_LEN);
    name[..end].iter().all(|b| (0x20..=0x7e).contains(b)) && name[end..].iter().all(|&b| b == 0)
}

/// FNV-1a 64 over the header with `state` and `checksum` zeroed.
pub fn checksum(raw: &RawHeader) -> u64 {
    let mut copy = *raw;
    copy.state = 0;
    copy.checksum = 0;
    fnv1a64(bytemuck::bytes_of(&copy))
}

/// FNV-1a, 64 bits. Used for the checksum and for type tags (a `const fn`, so tags are
/// computed at compile time). Not a cryptographic hash: the header guards against
/// accidents and incompatible builds, not against a peer that can write the segment.
pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

const fn arch_id() -> u64 {
    if cfg!(target_arch = "x86_64") {
        1
    } else if cfg!(target_arch = "aarch64") {
        2
    } else if cfg!(target_arch = "x86") {
        3
    } else if cfg!(target_arch = "arm") {
        4
    } else if cfg!(target_arch = "riscv64") {
        5
    } else {
        0xff
    }
}

/// This build's ABI tag: one byte each for pointer width, endianness, the sizes of
/// `pthread_mutex_t`, `pthread_cond_t`, `sem_t`, `pthread_rwlock_t`,
/// `pthread_barrier_t`, and the architecture. A segment made by a build with another tag
/// could hold pthread objects of another shape, so it is refused.
pub const ABI_TAG: u64 = (size_of::<usize>() as u64)
    | ((if cfg!(target_endian = "little") {
        1u64
    } else {
        2
    }) << 8)
    | ((size_of::<libc::pthread_mutex_t>() as u64) << 16)
    | ((size_of::<libc::pthread_cond_t>() as u64) << 24)
    | ((size_of::<libc::sem_t>() as u64) << 32)
    | ((size_of::<libc::pthread_rwlock_t>() as u64) << 40)
    | ((size_of::<libc::pthread_barrier_t>() as u64) << 48)
    | (arch_id() << 56);

/// Human-readable form of an ABI tag.
pub fn describe_abi(tag: u64) -> String {
    let b = |i: u32| (tag >> (8 * i)) & 0xff;
    let arch = match b(7) {
        1 => "x86_64",
        2 => "aarch64",
        3 => "x86",
        4 => "arm",
        5 => "riscv64",
        _ => "other",
    };
    format!(
        "{arch}, {}-bit, {}, mutex {} cond {} sem {} rwlock {} barrier {}",
        b(0) * 8,
        match b(1) {
            1 => "little-endian",
            2 => "big-endian",
            _ => "unknown-endian",
        },
        b(2),
        b(3),
        b(4),
        b(5),
        b(6)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{ElemInfo, Layout};
    use proptest::prelude::*;

    fn valid(
        kind: u32,
        size_log: u32,
        align_log: u32,
        count: u64,
        extra: u64,
        pid: u32,
    ) -> (RawHeader, u64) {
        let align = 1u64 << align_log.min(size_log);
        let size = (1u64 << size_log).max(align);
        let elem = ElemInfo {
            size,
            align,
            count,
            tag: 0,
            name: [0; TYPE_NAME_LEN],
        }
        .named("T");
        let layout = Layout::new(Kind::from_raw(kind), elem)
            .with_payload_len(size * count + extra)
            .with_params([1, 2, 3, 4])
            .with_flags(7);
        let off = (HEADER_LEN as u64)
            .max(align)
            .next_multiple_of(PAYLOAD_ALIGN as u64);
        let total = off + layout.payload_len;
        (
            build(layout.kind, &layout, total, off, pid, 12345, 999, 42),
            total,
        )
    }

    #[test]
    fn payload_offset_must_suit_the_element_alignment() {
        // A forged header (checksum recomputed) whose payload offset is a multiple of 64
        // but not of the element's 128-byte alignment: typed views would be misaligned.
        let (mut raw, _) = valid(2, 7, 7, 1, 0, 1);
        assert_eq!(raw.elem_align, 128);
        raw.payload_offset = 320;
        raw.total_len = 320 + raw.payload_len;
        raw.checksum = checksum(&raw);
        let got = Header::parse(bytemuck::bytes_of(&raw), raw.total_len);
        assert!(
            matches!(got, Err(HeaderError::BadPayloadOffset { found: 320 })),
            "{got:?}"
        );
        raw.payload_offset = 384;
        raw.total_len = 384 + raw.payload_len;
        raw.checksum = checksum(&raw);
        assert!(Header::parse(bytemuck::bytes_of(&raw), raw.total_len).is_ok());
    }

    fn arb_valid() -> impl Strategy<Value = (RawHeader, u64)> {
        (
            1u32..=12,
            0u32..=6,
            0u32..=6,
            0u64..1000,
            0u64..300,
            any::<u32>(),
        )
            .prop_map(|(k, s, a, c, e, p)| valid(k, s, a, c, e, p))
    }

    fn parse_raw(raw: &RawHeader, total: u64) -> Result<Header, HeaderError> {
        Header::parse(bytemuck::bytes_of(raw), total)
    }

    proptest! {
        #[test]
        fn valid_headers_round_trip((raw, total) in arb_valid(), state in 0u32..4) {
            let mut raw = raw;
            raw.state = state;
            let h = parse_raw(&raw, total).unwrap();
            prop_assert_eq!(h.raw, raw);
            prop_assert_eq!(h.state().to_raw(), state);
            prop_assert_eq!(h.type_name(), "T");
            prop_assert!(h.payload_range().end as u64 <= total);
        }

        #[test]
        fn every_single_byte_change_outside_state_is_refused(
            (raw, total) in arb_valid(), pos in 0usize..HEADER_LEN, x in 1u8..=255
        ) {
            prop_assume!(!(STATE_OFFSET..STATE_OFFSET + 4).contains(&pos));
            let mut bytes = bytemuck::bytes_of(&raw).to_vec();
            bytes[pos] ^= x;
            prop_assert!(Header::parse(&bytes, total).is_err());
        }

        #[test]
        fn each_field_corruption_maps_to_its_error((raw, total) in arb_valid(), v in any::<u64>()) {
            let check = |mutate: &dyn Fn(&mut RawHeader), want: &dyn Fn(&HeaderError) -> bool| {
                let mut r = raw;
                mutate(&mut r);
                let got = parse_raw(&r, total);
                assert!(matches!(&got, Err(e) if want(e)), "got {got:?}");
            };
            check(&|r| r.magic[(v % 8) as usize] ^= 0x55, &|e| matches!(e, HeaderError::BadMagic { .. }));
            check(&|r| r.version = FORMAT_VERSION + 1 + (v as u32 % 1000), &|e| matches!(e, HeaderError::UnsupportedVersion { .. }));
            check(&|r| r.header_len = HEADER_LEN as u32 + 1 + (v as u32 % 1000), &|e| matches!(e, HeaderError::BadHeaderLen { .. }));
            check(&|r| r.abi_tag ^= 1 << (v % 64), &|e| matches!(e, HeaderError::AbiMismatch { .. }));
            check(&|r| r.state = 4 + (v as u32 % 1000), &|e| matches!(e, HeaderError::BadState { .. }));
            check(&|r| r.total_len = r.total_len.wrapping_add(1 + v % 4096), &|e| matches!(e, HeaderError::LengthMismatch { .. }));
            check(&|r| r.payload_offset += 1 + v % 63, &|e| matches!(e, HeaderError::BadPayloadOffset { .. }));
            check(&|r| r.payload_offset = 64 * (v % 4), &|e| matches!(e, HeaderError::BadPayloadOffset { .. }));
            check(&|r| r.payload_len = r.total_len - r.payload_offset + 1 + v % 4096, &|e| matches!(e, HeaderError::PayloadOutOfBounds { .. }));
            check(&|r| r.payload_len = u64::MAX - v % 16, &|e| matches!(e, HeaderError::PayloadOutOfBounds { .. }));
            check(&|r| r.elem_align = 3 + 2 * (v % 1000), &|e| matches!(e, HeaderError::BadAlignment { .. }));
            check(&|r| r.elem_align = 8192 << (v % 8), &|e| matches!(e, HeaderError::BadAlignment { .. }));
            check(&|r| { r.elem_align = 64; r.elem_size = 64 * (v % 100) + 1 + v % 63; }, &|e| matches!(e, HeaderError::BadElementSize { .. }));
            check(&|r| r.elem_count = r.payload_len / r.elem_size + 1 + v % 1000, &|e| matches!(e, HeaderError::ElementsOutOfBounds { .. }));
            check(&|r| { r.elem_count = u64::MAX - v % 8; }, &|e| matches!(e, HeaderError::ElementsOutOfBounds { .. }));
            check(&|r| r.type_name[(v % 32) as usize] = 0x01, &|e| matches!(e, HeaderError::BadTypeName));
            check(&|r| r.reserved[(v % 64) as usize] = 1 + (v >> 8) as u8 % 255, &|e| matches!(e, HeaderError::ReservedNotZero));
            // Fields with no structural constraint are covered by the checksum.
            let cks = |e: &HeaderError| matches!(e, HeaderError::ChecksumMismatch { .. });
            let d = v | 1;
            check(&|r| r.kind ^= d as u32 | 1, &cks);
            check(&|r| r.flags ^= d as u32 | 1, &cks);
            check(&|r| r.creator_pid ^= d as u32 | 1, &cks);
            check(&|r| r.creator_start_time ^= d, &cks);
            check(&|r| r.created_unix_ns ^= d, &cks);
            check(&|r| r.type_tag ^= d, &cks);
            check(&|r| r.boot_tag ^= d, &cks);
            check(&|r| r.checksum ^= d, &cks);
            check(&|r| r.params[(v % 4) as usize] ^= d, &cks);
        }

        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..600), len in any::<u64>()) {
            let _ = Header::parse(&bytes, len);
        }
    }

    #[test]
    fn short_inputs_are_too_short() {
        for n in [0, 1, 255] {
            assert_eq!(
                Header::parse(&vec![0; n], n as u64),
                Err(HeaderError::TooShort { len: n as u64 })
            );
        }
    }

    #[test]
    fn abi_tag_describes_this_build() {
        let d = describe_abi(ABI_TAG);
        assert!(d.contains("64-bit") || d.contains("32-bit"), "{d}");
        assert!(
            d.contains(&format!("mutex {}", size_of::<libc::pthread_mutex_t>())),
            "{d}"
        );
    }
}
