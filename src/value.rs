//! Typed views over segments: [`Value<T>`] (one value) and [`Array<T>`] (`n` values), for
//! any [`bytemuck::Pod`] type, plus lock-free atomics for integer and float types.
//!
//! Access comes in three strengths:
//! - **atomic** (types implementing [`AtomicPod`]: `i8`..`u64`, `f32`, `f64`): `load`,
//!   `store`, `swap`, `compare_exchange` are single atomic instructions, and integers also
//!   get `fetch_add`/`fetch_sub`/`fetch_and`/`fetch_or`/`fetch_xor` ([`AtomicInt`]);
//!   safe across processes;
//! - **locked** (comes with the robust mutex);
//! - **unsynchronised** (`unsafe` `read_unsync`/`write_unsync`/`as_slice_unsync`): the
//!   caller guarantees that no other process writes concurrently (e.g. a single writer
//!   before publication, or an external lock).

use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering,
};

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::segment::{ElemInfo, ForeignMap, Kind, Layout, Segment, SegmentOptions};

mod sealed {
    pub trait Sealed {}
}

/// A `Pod` type that has a same-sized lock-free atomic: loads and stores of it are single
/// atomic instructions, even across processes.
pub trait AtomicPod: Pod + sealed::Sealed {
    /// The atomic type with the same size and alignment.
    type Atomic: Send + Sync;
    /// The raw bits type.
    #[doc(hidden)]
    type Bits: Pod;
    #[doc(hidden)]
    fn atomic_load(a: &Self::Atomic, o: Ordering) -> Self;
    #[doc(hidden)]
    fn atomic_store(a: &Self::Atomic, v: Self, o: Ordering);
    #[doc(hidden)]
    fn atomic_swap(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    #[doc(hidden)]
    fn atomic_cas(
        a: &Self::Atomic,
        cur: Self,
        new: Self,
        s: Ordering,
        f: Ordering,
    ) -> Result<Self, Self>;
}

/// An integer [`AtomicPod`]: adds read-modify-write arithmetic.
pub trait AtomicInt: AtomicPod {
    #[doc(hidden)]
    fn atomic_fetch_add(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    #[doc(hidden)]
    fn atomic_fetch_sub(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    #[doc(hidden)]
    fn atomic_fetch_and(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    #[doc(hidden)]
    fn atomic_fetch_or(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    #[doc(hidden)]
    fn atomic_fetch_xor(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicPod for $t {
            type Atomic = $a;
            type Bits = $t;
            fn atomic_load(a: &$a, o: Ordering) -> $t { a.load(o) }
            fn atomic_store(a: &$a, v: $t, o: Ordering) { a.store(v, o) }
            fn atomic_swap(a: &$a, v: $t, o: Ordering) -> $t { a.swap(v, o) }
            fn atomic_cas(a: &$a, c: $t, n: $t, s: Ordering, f: Ordering) -> Result<$t, $t> {
                a.compare_exchange(c, n, s, f)
            }
        }
        impl AtomicInt for $t {
            fn atomic_fetch_add(a: &$a, v: $t, o: Ordering) -> $t { a.fetch_add(v, o) }
            fn atomic_fetch_sub(a: &$a, v: $t, o: Ordering) -> $t { a.fetch_sub(v, o) }
            fn atomic_fetch_and(a: &$a, v: $t, o: Ordering) -> $t { a.fetch_and(v, o) }
            fn atomic_fetch_or(a: &$a, v: $t, o: Ordering) -> $t { a.fetch_or(v, o) }
            fn atomic_fetch_xor(a: &$a, v: $t, o: Ordering) -> $t { a.fetch_xor(v, o) }
        }
    )*};
}
atomic_int!(i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64,
            u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64);

macro_rules! atomic_float {
    ($($t:ty => $a:ty, $bits:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicPod for $t {
            type Atomic = $a;
            type Bits = $bits;
            fn atomic_load(a: &$a, o: Ordering) -> $t { <$t>::from_bits(a.load(o)) }
            fn atomic_store(a: &$a, v: $t, o: Ordering) { a.store(v.to_bits(), o) }
            fn atomic_swap(a: &$a, v: $t, o: Ordering) -> $t { <$t>::from_bits(a.swap(v.to_bits(), o)) }
            /// Compares bit patterns (so `-0.0 != 0.0` and a NaN equals itself).
            fn atomic_cas(a: &$a, c: $t, n: $t, s: Ordering, f: Ordering) -> Result<$t, $t> {
                a.compare_exchange(c.to_bits(), n.to_bits(), s, f)
                    .map(<$t>::from_bits)
                    .map_err(<$t>::from_bits)
            }
        }
    )*};
}
atomic_float!(f32 => AtomicU32, u32, f64 => AtomicU64, u64);

/// What keeps a typed view's memory mapped (one per handle, so the size difference
/// between the variants does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Owner {
    Segment(Segment),
    Foreign(ForeignMap),
}

impl Owner {
    fn base(&self) -> *mut u8 {
        match self {
            Owner::Segment(s) => s.payload_ptr(),
            Owner::Foreign(f) => f.as_ptr(),
        }
    }

    fn resource(&self) -> String {
        match self {
            Owner::Segment(s) => s.resource(),
            Owner::Foreign(f) => f.resource(),
        }
    }
}

/// Element access shared by [`Value`] and [`Array`]: a mapping plus an element count.
///
/// Invariant: `owner.base()` is aligned for `T` and valid for `len` elements.
#[derive(Debug)]
struct Typed<T> {
    owner: Owner,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Typed<T> {
    fn new(owner: Owner, len: usize) -> Self {
        Typed {
            owner,
            len,
            _t: PhantomData,
        }
    }

    fn base(&self) -> *mut T {
        self.owner.base() as *mut T
    }

    fn ptr(&self, i: usize) -> Option<*mut T> {
        // SAFETY: the struct invariant gives `len` aligned elements at base; `i < len`
        // keeps the offset in bounds.
        (i < self.len).then(|| unsafe { self.base().add(i) })
    }

    fn atomic(&self, i: usize) -> Option<&T::Atomic>
    where
        T: AtomicPod,
    {
        // SAFETY: T::Atomic has T's size and alignment (same-width std atomics), the
        // element is in bounds and lives as long as `self`; shared memory accessed only
        // through atomics here is race-free.
        self.ptr(i).map(|p| unsafe { &*(p as *const T::Atomic) })
    }
}

fn init_with<T: Pod>(values: impl Iterator<Item = T>) -> impl FnOnce(&mut [u8]) -> Result<()> {
    move |payload| {
        for (chunk, v) in payload.chunks_exact_mut(size_of::<T>()).zip(values) {
            chunk.copy_from_slice(bytemuck::bytes_of(&v));
        }
        Ok(())
    }
}

/// One `T` in shared memory: Python's `multiprocessing.Value`, typed.
///
/// ```
/// use shmkit::Value;
/// let name = format!("doc-value-{}", std::process::id());
/// let v = Value::<i64>::create(&name, 40)?;
/// assert_eq!(v.fetch_add(2), 40);
/// assert_eq!(Value::<i64>::open(&name)?.load(), 42);
/// assert!(Value::<u32>::open(&name).is_err()); // wrong type: a clear error
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Value<T> {
    inner: Typed<T>,
}

impl<T: Pod> Value<T> {
    /// The layout of a `Value<T>` segment.
    pub fn layout() -> Layout {
        Layout::new(Kind::Value, ElemInfo::of::<T>(1))
    }

    /// Creates a named value holding `init`.
    pub fn create(name: &str, init: T) -> Result<Self> {
        Self::create_with(&Segment::options(), name, init)
    }

    /// Creates a named value with the given options.
    pub fn create_with(opts: &SegmentOptions, name: &str, init: T) -> Result<Self> {
        let seg = opts.create(name, &Self::layout(), init_with(std::iter::once(init)))?;
        Ok(Self::wrap(seg))
    }

    /// Opens a named value, checking kind and type.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// Opens the value or creates it holding `init`.
    pub fn open_or_create(name: &str, init: T) -> Result<(Self, bool)> {
        let (seg, created) =
            Segment::open_or_create(name, &Self::layout(), init_with(std::iter::once(init)))?;
        Ok((Self::wrap(seg), created))
    }

    /// Creates a value in a file at `path`.
    pub fn create_file(path: impl AsRef<Path>, init: T) -> Result<Self> {
        let seg = Segment::options().create_file(
            path,
            &Self::layout(),
            init_with(std::iter::once(init)),
        )?;
        Ok(Self::wrap(seg))
    }

    /// Opens a value in a file at `path`.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_segment(Segment::options().open_file(path)?)
    }

    /// An anonymous value shared with children forked afterwards.
    pub fn anonymous(init: T) -> Result<Self> {
        let seg = Segment::anonymous(&Self::layout(), init_with(std::iter::once(init)))?;
        Ok(Self::wrap(seg))
    }

    /// Views an already opened segment as a `Value<T>`, checking kind and type.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        seg.check_layout(&Self::layout())?;
        Ok(Self::wrap(seg))
    }

    fn wrap(seg: Segment) -> Self {
        Value {
            inner: Typed::new(Owner::Segment(seg), 1),
        }
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        match &self.inner.owner {
            Owner::Segment(s) => s,
            Owner::Foreign(_) => unreachable!("a Value is always over a segment"),
        }
    }

    /// Pointer to the value in shared memory.
    pub fn as_ptr(&self) -> *mut T {
        self.inner.base()
    }

    /// Reads the value without synchronisation (volatile read).
    ///
    /// # Safety
    /// No other thread or process may write the value during the read (a racing write is
    /// a data race: the result could be torn, and the compiler may assume it is not).
    pub unsafe fn read_unsync(&self) -> T {
        // SAFETY: in bounds and aligned (checked on open); the caller excludes writers.
        unsafe { std::ptr::read_volatile(self.as_ptr()) }
    }

    /// Writes the value without synchronisation (volatile write).
    ///
    /// # Safety
    /// No other thread or process may read or write the value during the write.
    pub unsafe fn write_unsync(&self, v: T) {
        // SAFETY: in bounds and aligned (checked on open); the caller excludes others.
        unsafe { std::ptr::write_volatile(self.as_ptr(), v) }
    }
}

impl<T: AtomicPod> Value<T> {
    /// The value as its std atomic type, for any operation std offers.
    pub fn atomic(&self) -> &T::Atomic {
        // A Value always has exactly one element.
        self.inner
            .atomic(0)
            .unwrap_or_else(|| unreachable!("value has one element"))
    }

    /// Atomic load (`SeqCst`).
    pub fn load(&self) -> T {
        T::atomic_load(self.atomic(), Ordering::SeqCst)
    }

    /// Atomic store (`SeqCst`).
    pub fn store(&self, v: T) {
        T::atomic_store(self.atomic(), v, Ordering::SeqCst)
    }

    /// Atomic swap; returns the previous value.
    pub fn swap(&self, v: T) -> T {
        T::atomic_swap(self.atomic(), v, Ordering::SeqCst)
    }

    /// Atomic compare-and-exchange (floats compare bit patterns).
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        T::atomic_cas(
            self.atomic(),
            current,
            new,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
    }
}

impl<T: AtomicInt> Value<T> {
    /// Atomic wrapping add; returns the previous value.
    pub fn fetch_add(&self, v: T) -> T {
        T::atomic_fetch_add(self.atomic(), v, Ordering::SeqCst)
    }

    /// Atomic wrapping subtract; returns the previous value.
    pub fn fetch_sub(&self, v: T) -> T {
        T::atomic_fetch_sub(self.atomic(), v, Ordering::SeqCst)
    }

    /// Atomic bitwise and; returns the previous value.
    pub fn fetch_and(&self, v: T) -> T {
        T::atomic_fetch_and(self.atomic(), v, Ordering::SeqCst)
    }

    /// Atomic bitwise or; returns the previous value.
    pub fn fetch_or(&self, v: T) -> T {
        T::atomic_fetch_or(self.atomic(), v, Ordering::SeqCst)
    }

    /// Atomic bitwise xor; returns the previous value.
    pub fn fetch_xor(&self, v: T) -> T {
        T::atomic_fetch_xor(self.atomic(), v, Ordering::SeqCst)
    }
}

/// `len` values of `T` in shared memory: Python's `multiprocessing.Array`, typed.
///
/// ```
/// use shmkit::Array;
/// let name = format!("doc-array-{}", std::process::id());
/// let a = Array::<u32>::create(&name, 4, 0)?;
/// a.store(2, 7)?;
/// let b = Array::<u32>::open(&name)?;
/// assert_eq!(b.len(), 4);
/// assert_eq!(b.load(2)?, 7);
/// assert!(b.load(4).is_err()); // out of bounds: an error, not UB
/// shmkit::Segment::unlink(&name)?;
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Array<T> {
    inner: Typed<T>,
}

impl<T: Pod> Array<T> {
    /// The layout of an `Array<T>` of `len` elements.
    pub fn layout(len: u64) -> Layout {
        Layout::new(Kind::Array, ElemInfo::of::<T>(len))
    }

    /// Creates a named array of `len` copies of `fill`.
    pub fn create(name: &str, len: usize, fill: T) -> Result<Self> {
        Self::create_with(&Segment::options(), name, len, fill)
    }

    /// Creates a named array with the given options.
    pub fn create_with(opts: &SegmentOptions, name: &str, len: usize, fill: T) -> Result<Self> {
        let seg = opts.create(
            name,
            &Self::layout(len as u64),
            init_with(std::iter::repeat_n(fill, len)),
        )?;
        Self::from_segment(seg)
    }

    /// Creates a named array holding a copy of `values`.
    pub fn from_slice(name: &str, values: &[T]) -> Result<Self> {
        let seg = Segment::create(
            name,
            &Self::layout(values.len() as u64),
            init_with(values.iter().copied()),
        )?;
        Self::from_segment(seg)
    }

    /// Opens a named array of any length, checking kind and element type.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open(name)?)
    }

    /// Opens the array (which must have `len` elements) or creates it filled with `fill`.
    pub fn open_or_create(name: &str, len: usize, fill: T) -> Result<(Self, bool)> {
        let (seg, created) = Segment::open_or_create(
            name,
            &Self::layout(len as u64),
            init_with(std::iter::repeat_n(fill, len)),
        )?;
        Ok((Self::from_segment(seg)?, created))
    }

    /// An anonymous array shared with children forked afterwards.
    pub fn anonymous(len: usize, fill: T) -> Result<Self> {
        let seg = Segment::anonymous(
            &Self::layout(len as u64),
            init_with(std::iter::repeat_n(fill, len)),
        )?;
        Self::from_segment(seg)
    }

    /// Views an opened segment as an array, checking kind and element type.
    pub fn from_segment(seg: Segment) -> Result<Self> {
        let elem = ElemInfo::of::<T>(0);
        seg.check_elements(Kind::Array, &elem, None)?;
        let count = seg.header().raw.elem_count;
        let len = usize::try_from(count)
            .map_err(|_| Error::corrupt(seg.resource(), format!("element count {count}")))?;
        Ok(Array {
            inner: Typed::new(Owner::Segment(seg), len),
        })
    }

    /// Opens a foreign POSIX shm object (made by C, Python's
    /// `multiprocessing.shared_memory`, ...) that has no shmkit header, as `[T]`.
    ///
    /// The object's length must be a non-zero multiple of `size_of::<T>()`; the mapping is
    /// page-aligned, which satisfies any `Pod` alignment up to 4096.
    pub fn open_foreign(name: &str) -> Result<Self> {
        let foreign = ForeignMap::open(name)?;
        let size = size_of::<T>().max(1);
        let bytes = foreign.len();
        if bytes == 0 || bytes % size != 0 {
            return Err(Error::Mismatch {
                resource: foreign.resource(),
                what: "length",
                expected: format!(
                    "a non-zero multiple of {size} bytes ({})",
                    std::any::type_name::<T>()
                ),
                found: format!("{bytes} bytes"),
            });
        }
        if align_of::<T>() > 4096 {
            return Err(Error::invalid(
                foreign.resource(),
                "open_foreign",
                "alignment above a page",
            ));
        }
        let len = bytes / size;
        Ok(Array {
            inner: Typed::new(Owner::Foreign(foreign), len),
        })
    }

    /// True if opened with [`open_foreign`](Self::open_foreign).
    pub fn is_foreign(&self) -> bool {
        matches!(self.inner.owner, Owner::Foreign(_))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The underlying segment (`None` for a foreign object).
    pub fn segment(&self) -> Option<&Segment> {
        match &self.inner.owner {
            Owner::Segment(s) => Some(s),
            Owner::Foreign(_) => None,
        }
    }

    /// Pointer to element 0.
    pub fn as_ptr(&self) -> *mut T {
        self.inner.base()
    }

    fn oob(&self, i: usize, op: &'static str) -> Error {
        Error::invalid(
            self.inner.owner.resource(),
            op,
            format!("index {i} out of bounds (len {})", self.len()),
        )
    }

    /// Reads element `i` without synchronisation.
    ///
    /// # Safety
    /// No other thread or process may write element `i` during the read.
    pub unsafe fn read_unsync(&self, i: usize) -> Result<T> {
        let p = self.inner.ptr(i).ok_or_else(|| self.oob(i, "read"))?;
        // SAFETY: in bounds and aligned; the caller excludes concurrent writers.
        Ok(unsafe { std::ptr::read_volatile(p) })
    }

    /// Writes element `i` without synchronisation.
    ///
    /// # Safety
    /// No other thread or process may access element `i` during the write.
    pub unsafe fn write_unsync(&self, i: usize, v: T) -> Result<()> {
        let p = self.inner.ptr(i).ok_or_else(|| self.oob(i, "write"))?;
        // SAFETY: in bounds and aligned; the caller excludes concurrent access.
        unsafe { std::ptr::write_volatile(p, v) };
        Ok(())
    }

    /// The elements as a slice.
    ///
    /// # Safety
    /// While the slice lives, no other thread or process may write any element.
    pub unsafe fn as_slice_unsync(&self) -> &[T] {
        // SAFETY: len elements, in bounds and aligned (checked on open); the caller
        // excludes writers for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// The elements as a mutable slice.
    ///
    /// # Safety
    /// While the slice lives, no other thread or process may access any element, and no
    /// other slice from this array may exist.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice_unsync(&self) -> &mut [T] {
        // SAFETY: as above; exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
}

impl<T: AtomicPod> Array<T> {
    /// Element `i` as its std atomic type.
    pub fn atomic(&self, i: usize) -> Result<&T::Atomic> {
        self.inner.atomic(i).ok_or_else(|| self.oob(i, "atomic"))
    }

    /// Atomic load of element `i`.
    pub fn load(&self, i: usize) -> Result<T> {
        Ok(T::atomic_load(self.atomic(i)?, Ordering::SeqCst))
    }

    /// Atomic store to element `i`.
    pub fn store(&self, i: usize, v: T) -> Result<()> {
        T::atomic_store(self.atomic(i)?, v, Ordering::SeqCst);
        Ok(())
    }

    /// A copy of every element, each loaded atomically (the copy as a whole is not a
    /// snapshot if writers are active).
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len()).filter_map(|i| self.load(i).ok()).collect()
    }
}

impl<T: AtomicInt> Array<T> {
    /// Atomic wrapping add to element `i`; returns the previous value.
    pub fn fetch_add(&self, i: usize, v: T) -> Result<T> {
        Ok(T::atomic_fetch_add(self.atomic(i)?, v, Ordering::SeqCst))
    }
}
