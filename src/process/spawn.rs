//! Starting, dispatching and supervising child processes (feature `process`). See the
//! [module docs](super).

use std::any::type_name;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ExitStatus, Failure};
use crate::error::{Error, Result};
use crate::pipe::Pipe;

/// Environment of a child started with [`StartMethod::Spawn`]: `KIND:ENTRY`.
const ENV_ROLE: &str = "SHMKIT_PROCESS_ROLE";
/// The child's end of its control pipe (a descriptor number).
const ENV_FD: &str = "SHMKIT_PROCESS_FD";
/// Further inherited descriptors (comma-separated), e.g. a pool's queues.
const ENV_FDS: &str = "SHMKIT_PROCESS_FDS";
/// The parent's pid, to catch a parent that died before the death signal was set.
const ENV_PARENT: &str = "SHMKIT_PROCESS_PARENT";
/// The child's name ([`current_process`]).
const ENV_NAME: &str = "SHMKIT_PROCESS_NAME";
/// The parent's log queue (`FD:LEVEL`), when `shmkit::logging` is installed.
const ENV_LOG: &str = "SHMKIT_PROCESS_LOG";

/// Child → parent, first message: dispatched, entry found.
const TAG_HELLO: u8 = b'H';
/// Child → parent, first message: the entry is not registered in the child.
const TAG_NOT_REGISTERED: u8 = b'N';
/// Parent → child: the argument.
const TAG_ARGS: u8 = b'A';
/// Child → parent: the return value.
const TAG_RESULT: u8 = b'R';
/// Child → parent: the entry panicked (message follows).
const TAG_PANIC: u8 = b'P';
/// Child → parent: (de)serialisation failed (message follows).
const TAG_CODEC: u8 = b'C';

/// Exit code of a child whose parent died before it could set its death signal.
const EXIT_ORPHAN: i32 = 70;

/// How a child is started. See the [module docs](super#start-methods).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartMethod {
    /// Re-execute the current executable; [`init`] dispatches (Python's `spawn`).
    #[default]
    Spawn,
    /// `fork()` without `exec` (Python's `fork`): fast, but see the lock-held-across-fork
    /// hazard in the module docs.
    Fork,
}

/// A named entry function of this program that a child process can run.
///
/// The name identifies the function across `exec`; [`entry!`](crate::entry) builds it
/// from the function's path. `A` travels to the child and `R` back in the entry's
/// codec: serde (postcard) for [`Entry::new`] / `entry!(f)`, the value's own bytes for
/// [`Entry::pod`] / `entry!(pod f)`.
pub struct Entry<A, R> {
    name: &'static str,
    f: fn(A) -> R,
    pub(crate) arg: Codec<A>,
    pub(crate) ret: Codec<R>,
    /// Plain-data entries: runs items back to back (see [`Role::call_fixed`]).
    run_fixed: Option<RunFixed<A, R>>,
}

/// `(f, args, count, out, progress word, message id, first index)` → `(items done, the
/// failure of the next)`.
#[doc(hidden)]
pub type RunFixed<A, R> =
    fn(fn(A) -> R, &[u8], usize, &mut [u8], &AtomicU64, u64, usize) -> (usize, Option<Failure>);
/// Decodes a run of `count` fixed-size values onto the vector.
type ExtendFrom<T> = fn(&[u8], usize, &mut Vec<T>);
/// Appends the encodings of a run of fixed-size values back to back.
pub(crate) type Pack<T> = fn(&[T], &mut Vec<u8>);
/// Encodes a run of values from the start of the slice as a pool's task message holds
/// them (postcard: each preceded by its length, u32 LE; plain data: back to back), and
/// returns `(values encoded, bytes used, why the next one was not)`.
pub(crate) type EncodeRun<T> = fn(&[T], &mut [u8]) -> (usize, usize, Option<EncodeError>);

impl<A, R> Entry<A, R> {
    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The encoding of the argument and the result: `"postcard"` or `"pod"`.
    pub fn codec(&self) -> &'static str {
        self.arg.name
    }
}

impl<A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned> Entry<A, R> {
    /// An entry named `name` (unique in the program) running `f`; argument and result
    /// travel with serde (postcard).
    pub const fn new(name: &'static str, f: fn(A) -> R) -> Self {
        Entry {
            name,
            f,
            arg: Codec::postcard(),
            ret: Codec::postcard(),
            run_fixed: None,
        }
    }
}

impl<A: Pod, R: Pod> Entry<A, R> {
    /// An entry for plain-data argument and result ([`bytemuck::Pod`]): they travel as
    /// their own bytes, with no serialisation (a [`Pool`](super::Pool) of these moves a
    /// task in a few nanoseconds; `shmkit bench --workload pool` measures both forms). A
    /// message of the wrong length is a [`Failure::Codec`], never a misread value; any
    /// bit pattern of the right length is a valid `Pod`.
    pub const fn pod(name: &'static str, f: fn(A) -> R) -> Self {
        Entry {
            name,
            f,
            arg: Codec::pod(),
            ret: Codec::pod(),
            run_fixed: Some(run_pod_with::<A, R, fn(A) -> R>),
        }
    }

    /// [`Entry::pod`] whose item loop is `run`, a copy of [`run_pod_with`] for `f`
    /// itself that `entry!(pod f)` generates (`f` inlined; `run` ignores its first
    /// argument). Not an API: public for the macro only.
    #[doc(hidden)]
    pub const fn pod_inlined(name: &'static str, f: fn(A) -> R, run: RunFixed<A, R>) -> Self {
        Entry {
            name,
            f,
            arg: Codec::pod(),
            ret: Codec::pod(),
            run_fixed: Some(run),
        }
    }
}

/// A plain-data entry over a run of arguments back to back, writing the results back to
/// back into `out` (room for every one): per item the progress word, then the call (a
/// panic stops the run and is returned with the count before it). Generic in `F`:
/// `entry!(pod f)` instantiates it with the function item, so that `f` is inlined into
/// the loop (no indirect call per item). Not an API: public for the macro only.
#[doc(hidden)]
#[inline(always)]
pub fn run_pod_with<A: Pod, R: Pod, F: Fn(A) -> R>(
    f: F,
    args: &[u8],
    count: usize,
    out: &mut [u8],
    word: &AtomicU64,
    id: u64,
    first: usize,
) -> (usize, Option<Failure>) {
    let (asize, rsize) = (std::mem::size_of::<A>(), std::mem::size_of::<R>());
    let mut done = 0;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Stops early only if the slices are short (the caller sizes them).
        for k in 0..count {
            let (Some(a), Some(o)) = (
                args.get(k * asize..(k + 1) * asize),
                out.get_mut(k * rsize..(k + 1) * rsize),
            ) else {
                break;
            };
            word.store(
                (((first + k) as u64) << 32) | (id & 0xffff_ffff),
                Ordering::Relaxed,
            );
            o.copy_from_slice(bytemuck::bytes_of(&f(bytemuck::pod_read_unaligned(a))));
            done = k + 1;
        }
    }));
    match r {
        Ok(()) => (done, None),
        Err(p) => (done, Some(Failure::Panicked(panic_message(p.as_ref())))),
    }
}

/// Why an encoding into a slice failed.
pub(crate) enum EncodeError {
    /// The slice is too short (the caller may retry with more room).
    Full,
    /// The value cannot be encoded.
    Other(String),
}

/// How values of `T` become bytes and back: the functions of one format, chosen when the
/// [`Entry`] is built (no trait: `T` need only satisfy the bounds of the format chosen).
pub(crate) struct Codec<T> {
    pub(crate) name: &'static str,
    /// Every value encodes to exactly this many bytes (a pool then sends them back to
    /// back, without per-item framing).
    pub(crate) fixed: Option<usize>,
    /// Encodes at the start of the slice; returns the length.
    pub(crate) to_slice: fn(&T, &mut [u8]) -> std::result::Result<usize, EncodeError>,
    /// A run of values, framed as a task message holds them (a pool's caller encodes its
    /// arguments with it, a few hundred per call).
    pub(crate) encode_run: EncodeRun<T>,
    /// Appends the encoding to the vector.
    pub(crate) to_vec: fn(&T, Vec<u8>) -> std::result::Result<Vec<u8>, Failure>,
    /// Decodes exactly these bytes.
    pub(crate) from_bytes: fn(&[u8]) -> std::result::Result<T, Failure>,
    /// Fixed sizes only: decodes a run of `count` values back to back (the length is
    /// `count` times the size) onto the vector.
    pub(crate) extend_from: Option<ExtendFrom<T>>,
    /// Fixed sizes only: appends the encodings of a run of values back to back, in one
    /// copy (a pool encodes a chunk of plain-data arguments with it).
    pub(crate) pack: Option<Pack<T>>,
}

impl<T> Clone for Codec<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Codec<T> {}

impl<T: Serialize + DeserializeOwned> Codec<T> {
    const fn postcard() -> Self {
        Codec {
            name: "postcard",
            fixed: None,
            to_slice: |v, out| encode_to_slice(v, out).map_err(encode_error::<T>),
            encode_run: |vs, out| {
                let mut pos = 0;
                for (i, v) in vs.iter().enumerate() {
                    let r = match out.get_mut(pos + 4..) {
                        Some(room) => encode_to_slice(v, room),
                        None => Err(postcard::Error::SerializeBufferFull),
                    };
                    match r {
                        Ok(used) => {
                            out[pos..pos + 4].copy_from_slice(&(used as u32).to_le_bytes());
                            pos += 4 + used;
                        }
                        Err(e) => return (i, pos, Some(encode_error::<T>(e))),
                    }
                }
                (vs.len(), pos, None)
            },
            to_vec: encode::<T>,
            from_bytes: decode::<T>,
            extend_from: None,
            pack: None,
        }
    }
}

impl<T: Pod> Codec<T> {
    const fn pod() -> Self {
        Codec {
            name: "pod",
            fixed: Some(std::mem::size_of::<T>()),
            to_slice: |v, out| {
                let b = bytemuck::bytes_of(v);
                match out.get_mut(..b.len()) {
                    Some(d) => {
                        d.copy_from_slice(b);
                        Ok(b.len())
                    }
                    None => Err(EncodeError::Full),
                }
            },
            encode_run: |vs, out| {
                let size = std::mem::size_of::<T>();
                let n = vs
                    .len()
                    .min(out.len().checked_div(size).unwrap_or(usize::MAX));
                if size > 0 {
                    out[..n * size].copy_from_slice(bytemuck::cast_slice(&vs[..n]));
                }
                (n, n * size, (n < vs.len()).then_some(EncodeError::Full))
            },
            to_vec: |v, mut out| {
                out.extend_from_slice(bytemuck::bytes_of(v));
                Ok(out)
            },
            from_bytes: |b| {
                bytemuck::try_pod_read_unaligned(b).map_err(|_| {
                    Failure::Codec(format!(
                        "decoding {}: {} bytes, expected {}",
                        type_name::<T>(),
                        b.len(),
                        std::mem::size_of::<T>()
                    ))
                })
            },
            extend_from: Some(|b, count, out| {
                let size = std::mem::size_of::<T>();
                if size == 0 {
                    out.extend((0..count).map(|_| T::zeroed()));
                } else {
                    out.extend(b.chunks_exact(size).map(bytemuck::pod_read_unaligned::<T>));
                }
            }),
            pack: Some(|v, out| {
                if std::mem::size_of::<T>() > 0 {
                    out.extend_from_slice(bytemuck::cast_slice(v));
                }
            }),
        }
    }
}

/// `Entry::new("path::to::f", f)`: an [`Entry`] named after the function's path;
/// `entry!(pod f)`: `Entry::pod("path::to::f (pod)", f)`, for plain-data argument and
/// result (both forms of one function can be registered side by side), with a pool
/// worker's item loop generated for `f` itself, so that the call is inlined (a nested
/// `fn` names `f`: give a path that resolves from the module, not `Self::f` or one
/// using generic parameters of an enclosing item; [`Entry::pod`] takes any `fn`).
///
/// ```
/// fn square(x: i64) -> i64 { x * x }
/// static SQUARE: shmkit::process::Entry<i64, i64> = shmkit::entry!(square);
/// static SQUARE_POD: shmkit::process::Entry<i64, i64> = shmkit::entry!(pod square);
/// assert!(SQUARE.name().ends_with("::square"));
/// assert_eq!((SQUARE.codec(), SQUARE_POD.codec()), ("postcard", "pod"));
/// ```
#[macro_export]
macro_rules! entry {
    (pod $f:path) => {
        $crate::process::Entry::pod_inlined(
            concat!(module_path!(), "::", stringify!($f), " (pod)"),
            $f,
            {
                // The item loop with `$f` inlined (the pointer it is given is `$f`).
                fn run<A, R>(
                    _: fn(A) -> R,
                    args: &[u8],
                    count: usize,
                    out: &mut [u8],
                    word: &::core::sync::atomic::AtomicU64,
                    id: u64,
                    first: usize,
                ) -> (usize, ::core::option::Option<$crate::process::Failure>) {
                    $crate::process::run_pod_with($f, args, count, out, word, id, first)
                }
                run
            },
        )
    };
    ($f:path) => {
        $crate::process::Entry::new(concat!(module_path!(), "::", stringify!($f)), $f)
    };
}

mod private {
    pub trait Sealed {}
}

/// An entry with its types erased, as [`init`] takes it. Implemented by [`Entry`] only.
pub trait Role: Sync + private::Sealed {
    /// The entry's name.
    fn name(&self) -> &'static str;

    /// Decodes the argument from `args`, runs the entry (catching a panic) and appends the
    /// encoded result to `out`.
    #[doc(hidden)]
    fn call(&self, args: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), Failure>;

    /// [`call`](Self::call) for a pool worker: encodes the result into `out` and returns
    /// its length, or, when it does not fit there, into `spill` (cleared first) and
    /// returns `None`.
    #[doc(hidden)]
    fn call_into(
        &self,
        args: &[u8],
        out: &mut [u8],
        spill: &mut Vec<u8>,
    ) -> std::result::Result<Option<usize>, Failure>;

    /// The sizes of the argument and of the result when both encode to a fixed size.
    #[doc(hidden)]
    fn fixed_sizes(&self) -> Option<(usize, usize)>;

    /// For an entry of fixed sizes: runs the `count` arguments back to back in `args`
    /// (items `first..` of message `id`), storing `(index << 32) | (id & 0xffff_ffff)`
    /// in `word` before each, and writes the results back to back into `out` (room for
    /// all). Returns how many ran, and the failure of the one after them if one failed.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    fn call_fixed(
        &self,
        args: &[u8],
        count: usize,
        out: &mut [u8],
        word: &AtomicU64,
        id: u64,
        first: usize,
    ) -> (usize, Option<Failure>);
}

impl<A, R> private::Sealed for Entry<A, R> {}

impl<A, R> Entry<A, R> {
    /// Decodes the argument and runs the entry, catching a panic.
    fn run(&self, args: &[u8]) -> std::result::Result<R, Failure> {
        let a: A = (self.arg.from_bytes)(args)?;
        let f = self.f;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(a)))
            .map_err(|p| Failure::Panicked(panic_message(p.as_ref())))
    }
}

impl<A, R> Role for Entry<A, R> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn call(&self, args: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), Failure> {
        let r = self.run(args)?;
        // On error `out` is left empty (to_vec consumed it).
        *out = (self.ret.to_vec)(&r, std::mem::take(out))?;
        Ok(())
    }

    fn call_into(
        &self,
        args: &[u8],
        out: &mut [u8],
        spill: &mut Vec<u8>,
    ) -> std::result::Result<Option<usize>, Failure> {
        let r = self.run(args)?;
        // Into the message in place; only a result that does not fit in what is left of
        // it takes the slow path.
        match (self.ret.to_slice)(&r, out) {
            Ok(used) => Ok(Some(used)),
            Err(EncodeError::Full) => {
                spill.clear();
                *spill = (self.ret.to_vec)(&r, std::mem::take(spill))?;
                Ok(None)
            }
            Err(EncodeError::Other(m)) => Err(Failure::Codec(m)),
        }
    }

    fn fixed_sizes(&self) -> Option<(usize, usize)> {
        self.run_fixed?;
        Some((self.arg.fixed?, self.ret.fixed?))
    }

    fn call_fixed(
        &self,
        args: &[u8],
        count: usize,
        out: &mut [u8],
        word: &AtomicU64,
        id: u64,
        first: usize,
    ) -> (usize, Option<Failure>) {
        match self.run_fixed {
            Some(run) => run(self.f, args, count, out, word, id, first),
            None => (
                0,
                Some(Failure::Codec("not an entry of fixed sizes".into())),
            ),
        }
    }
}

/// A postcard encoding error as the pool reports it.
fn encode_error<T>(e: postcard::Error) -> EncodeError {
    match e {
        postcard::Error::SerializeBufferFull => EncodeError::Full,
        e => EncodeError::Other(format!("encoding {}: {e}", type_name::<T>())),
    }
}

/// Encodes `v` at the start of `out`; returns the length
/// ([`postcard::Error::SerializeBufferFull`] when it does not fit). The pool's per-item
/// encoder: postcard's own slice output copies each varint with a call to `memcpy`,
/// which costs more than the rest of encoding a small value.
pub(crate) fn encode_to_slice<T: Serialize + ?Sized>(
    v: &T,
    out: &mut [u8],
) -> std::result::Result<usize, postcard::Error> {
    postcard::serialize_with_flavor(v, SliceOut { buf: out, pos: 0 })
}

/// A postcard output into a slice that copies short runs with fixed-size moves.
struct SliceOut<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl postcard::ser_flavors::Flavor for SliceOut<'_> {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        let d = self
            .buf
            .get_mut(self.pos)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        *d = b;
        self.pos += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        let d = self
            .buf
            .get_mut(self.pos..self.pos + b.len())
            .ok_or(postcard::Error::SerializeBufferFull)?;
        macro_rules! fixed {
            ($($n:literal)*) => {
                match b.len() {
                    $($n => {
                        if let (Ok(d), Ok(s)) =
                            (<&mut [u8; $n]>::try_from(&mut *d), <&[u8; $n]>::try_from(b))
                        {
                            *d = *s;
                        }
                    })*
                    _ => d.copy_from_slice(b),
                }
            };
        }
        // Varints are 1..=10 bytes; u128 up to 19.
        fixed!(1 2 3 4 5 6 7 8 9 10);
        self.pos += b.len();
        Ok(())
    }

    #[inline]
    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.pos)
    }
}

/// The text of a panic payload (`&str` or `String`; anything else is named as such).
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic payload that is not a string".to_owned()
    }
}

pub(crate) fn encode<T: Serialize>(
    v: &T,
    prefix: Vec<u8>,
) -> std::result::Result<Vec<u8>, Failure> {
    postcard::to_extend(v, prefix)
        .map_err(|e| Failure::Codec(format!("encoding {}: {e}", type_name::<T>())))
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> std::result::Result<T, Failure> {
    postcard::from_bytes(b)
        .map_err(|e| Failure::Codec(format!("decoding {}: {e}", type_name::<T>())))
}

// ---------------------------------------------------------------------------------------
// Role dispatch

static REGISTRY: OnceLock<Vec<&'static dyn Role>> = OnceLock::new();
/// Set once this process dispatched its role (or was forked as a child).
static DISPATCHED: AtomicBool = AtomicBool::new(false);
/// This process's name when it is a child (leaked, never freed; null: `MainProcess`).
static NAME: AtomicPtr<String> = AtomicPtr::new(std::ptr::null_mut());
/// The parent's pid when this process is a child started by shmkit (0: none).
static PARENT: AtomicU32 = AtomicU32::new(0);
/// Numbers default names (`Process-N`).
static COUNTER: AtomicU32 = AtomicU32::new(1);

/// Registers the entries a child may run and, in a child started by [`Process`] (or a
/// [`Pool`](super::Pool) worker), runs its role and exits: this call returns only in a
/// process that is not such a child.
///
/// Call it first thing in `main`, before spawning threads or parsing arguments: a child
/// re-executes the program, and everything `main` does before this call it does too. It
/// removes its role marker from the environment, so that programs the entry starts do not
/// see it. Entry names must be unique (a duplicate is a programming error: it panics).
pub fn init(entries: &[&'static dyn Role]) {
    for (i, a) in entries.iter().enumerate() {
        if entries[..i].iter().any(|b| b.name() == a.name()) {
            panic!(
                "shmkit::process::init: entry name {:?} registered twice",
                a.name()
            );
        }
    }
    let _ = REGISTRY.set(entries.to_vec());
    let Some(role) = std::env::var_os(ENV_ROLE) else {
        return;
    };
    if DISPATCHED.swap(true, Ordering::AcqRel) {
        return;
    }
    let get = |k: &str| std::env::var(k).ok();
    let (role, fd, fds, parent, name, log) = (
        role.to_string_lossy().into_owned(),
        get(ENV_FD),
        get(ENV_FDS),
        get(ENV_PARENT),
        get(ENV_NAME),
        get(ENV_LOG),
    );
    for k in [ENV_ROLE, ENV_FD, ENV_FDS, ENV_PARENT, ENV_NAME, ENV_LOG] {
        // SAFETY: `init` is documented to run first in `main`, before the program starts
        // threads; shmkit started this process with `exec` a moment ago, so no other
        // thread reads the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
    let parent: u32 = parent.and_then(|p| p.parse().ok()).unwrap_or(0);
    // The death signal was set before exec (and survives it); a parent that died before
    // that left us with another parent.
    if parent == 0 || nix::unistd::getppid().as_raw() as u32 != parent {
        std::process::exit(EXIT_ORPHAN);
    }
    let Some(fd) = fd.and_then(|f| f.parse::<RawFd>().ok()) else {
        eprintln!("shmkit: {ENV_ROLE} is set but {ENV_FD} is missing: not started by shmkit");
        std::process::exit(EXIT_ORPHAN);
    };
    let extra: Vec<RawFd> = fds
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    for &f in std::iter::once(&fd).chain(&extra) {
        // Grandchildren must not inherit these.
        let _ = nix::fcntl::fcntl(
            // SAFETY: the descriptor was set up by the parent for this process and stays
            // open (we only borrow it for this call).
            unsafe { BorrowedFd::borrow_raw(f) },
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    // SAFETY: the parent passed us this descriptor (the child end of our control pipe)
    // and nothing else in this process owns it.
    let pipe = match Pipe::try_from(unsafe { OwnedFd::from_raw_fd(fd) }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shmkit: bad control descriptor: {e}");
            std::process::exit(EXIT_ORPHAN);
        }
    };
    set_current(name.unwrap_or_else(|| "Process".into()), parent);
    // `FD:LEVEL:WAIT_US` (the wait may be absent: the default then).
    if let Some((fd, rest)) = log.as_deref().and_then(|l| l.split_once(':')) {
        let (level, wait) = rest.split_once(':').unwrap_or((rest, ""));
        if let (Ok(fd), Ok(level)) = (fd.parse::<RawFd>(), level.parse::<usize>()) {
            adopt_log(fd, level, wait.parse::<u64>().ok());
        }
    }
    let (kind, entry) = role.split_once(':').unwrap_or(("process", role.as_str()));
    let found = REGISTRY
        .get()
        .and_then(|r| r.iter().copied().find(|e| e.name() == entry));
    let code = child_main(kind, found.ok_or(entry), pipe, &extra);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

#[cfg(feature = "log")]
fn adopt_log(fd: RawFd, level: usize, wait_us: Option<u64>) {
    // SAFETY: the parent passed this descriptor (its log queue) to this process; nothing
    // else here owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    if let Err(e) = crate::logging::install_child(fd, level, wait_us) {
        eprintln!("shmkit: could not install the parent's logger: {e}");
    }
}

#[cfg(not(feature = "log"))]
fn adopt_log(_fd: RawFd, _level: usize, _wait_us: Option<u64>) {}

fn set_current(name: String, parent: u32) {
    let p = Box::into_raw(Box::new(name));
    // The previous name (if any) is leaked: a reader may still hold it.
    NAME.store(p, Ordering::Release);
    PARENT.store(parent, Ordering::Release);
}

/// The calling process as [`current_process`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrentProcess {
    /// `MainProcess`, or the name given to [`Process::name`] (default `Process-N`).
    pub name: &'static str,
    /// Its pid.
    pub pid: u32,
    /// The pid of the process that started it, when shmkit started it.
    pub parent: Option<u32>,
}

/// This process: name, pid and parent (Python's `current_process()` and
/// `parent_process()`). Allocation-free.
pub fn current_process() -> CurrentProcess {
    let p = NAME.load(Ordering::Acquire);
    let name = if p.is_null() {
        "MainProcess"
    } else {
        // SAFETY: non-null values come from Box::into_raw in `set_current` and are never
        // freed.
        unsafe { (*p).as_str() }
    };
    CurrentProcess {
        name,
        pid: std::process::id(),
        parent: match PARENT.load(Ordering::Acquire) {
            0 => None,
            p => Some(p),
        },
    }
}

/// Runs a child's role; returns its exit code.
fn child_main(
    kind: &str,
    role: std::result::Result<&'static dyn Role, &str>,
    pipe: Pipe,
    extra: &[RawFd],
) -> i32 {
    let role = match role {
        Ok(r) => r,
        Err(name) => {
            let mut m = vec![TAG_NOT_REGISTERED];
            m.extend_from_slice(name.as_bytes());
            let _ = pipe.send(&m);
            return 2;
        }
    };
    if pipe.send(&[TAG_HELLO]).is_err() {
        return EXIT_ORPHAN;
    }
    match kind {
        "process" => run_process(role, pipe),
        "worker" => super::pool::worker_main(role, pipe, extra),
        _ => 2,
    }
}

fn run_process(role: &dyn Role, mut pipe: Pipe) -> i32 {
    let Ok(msg) = pipe.recv() else {
        return EXIT_ORPHAN; // the parent closed its end or died
    };
    let mut out = vec![TAG_RESULT];
    let (tag, code, text) = match msg.split_first() {
        Some((&TAG_ARGS, args)) => match role.call(args, &mut out) {
            Ok(()) => (TAG_RESULT, 0, String::new()),
            Err(Failure::Panicked(m)) => (TAG_PANIC, 101, m),
            Err(f) => (TAG_CODEC, 1, f.to_string()),
        },
        _ => (
            TAG_CODEC,
            1,
            "protocol: the first message was not the argument".into(),
        ),
    };
    if tag != TAG_RESULT {
        out.clear();
        out.push(tag);
        out.extend_from_slice(text.as_bytes());
    }
    if let Err(e) = pipe.send(&out) {
        if matches!(e, Error::MessageTooLarge { .. }) {
            let mut m = vec![TAG_CODEC];
            m.extend_from_slice(e.to_string().as_bytes());
            let _ = pipe.send(&m);
        }
        return 1;
    }
    code
}

/// Refuses to start children from a process that was started as a shmkit child but did
/// not dispatch (its `main` does not call [`init`] first): it would recurse.
fn refuse_undispatched(resource: &str) -> Result<()> {
    if std::env::var_os(ENV_ROLE).is_some() && !DISPATCHED.load(Ordering::Acquire) {
        return Err(Error::invalid(
            resource,
            "start",
            "this process was started as a shmkit child but main did not call \
             shmkit::process::init first; call it at the top of main",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The spawner thread

type Job = Box<dyn FnOnce() + Send>;

struct Spawner {
    pid: u32,
    tx: mpsc::Sender<Job>,
}

/// The spawner of the current process (a forked child makes its own: the parent's thread
/// does not exist in it). Published pointers come from `Box::into_raw` and are never
/// freed.
static SPAWNER: AtomicPtr<Spawner> = AtomicPtr::new(std::ptr::null_mut());

fn spawner() -> Result<&'static Spawner> {
    let me = std::process::id();
    loop {
        let cur = SPAWNER.load(Ordering::Acquire);
        if !cur.is_null() {
            // SAFETY: see SPAWNER: a published pointer stays valid forever.
            let s = unsafe { &*cur };
            if s.pid == me {
                return Ok(s);
            }
        }
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("shmkit-spawner".into())
            // A forked child runs its entry on this thread's stack.
            .stack_size(8 << 20)
            .spawn(move || {
                for job in rx {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| {
                Error::os(
                    "shmkit-spawner thread",
                    "spawn thread",
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
                )
            })?;
        let new = Box::into_raw(Box::new(Spawner { pid: me, tx }));
        match SPAWNER.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: published just now; never freed.
            Ok(_) => return Ok(unsafe { &*new }),
            // Another thread installed one first: drop ours (its thread ends) and use it.
            // SAFETY: `new` was never published, so we still own it.
            Err(_) => drop(unsafe { Box::from_raw(new) }),
        }
    }
}

/// Runs `job` on the spawner thread and returns its result.
fn on_spawner<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let gone = || {
        Error::invalid(
            "shmkit-spawner thread",
            "start",
            "the spawner thread is gone",
        )
    };
    let s = spawner()?;
    let (rtx, rrx) = mpsc::sync_channel(1);
    s.tx.send(Box::new(move || {
        let _ = rtx.send(job());
    }))
    .map_err(|_| gone())?;
    rrx.recv().map_err(|_| gone())
}

// ---------------------------------------------------------------------------------------
// Launching

/// What to start.
pub(crate) struct Spec {
    pub(crate) kind: &'static str,
    pub(crate) role: &'static dyn Role,
    pub(crate) name: String,
    pub(crate) method: StartMethod,
    /// Descriptors the child inherits under the same numbers (e.g. queue segments).
    pub(crate) fds: Vec<OwnedFd>,
}

/// Sets the death signal and checks the parent, in a child between `fork` and `exec` (or
/// right after `fork`). Async-signal-safe: no allocation, no lock.
fn child_guard(parent: u32) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only; async-signal-safe.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } == -1
    {
        return Err(std::io::Error::last_os_error());
    }
    // The parent may have died before the line above: then we were re-parented.
    if nix::unistd::getppid().as_raw() as u32 != parent {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Starts a child; it has sent its hello when this returns.
pub(crate) fn launch(spec: Spec, start_timeout: Duration) -> Result<Proc> {
    let resource = format!("process {}", spec.name);
    refuse_undispatched(&resource)?;
    if spec.method == StartMethod::Spawn {
        let known = REGISTRY
            .get()
            .is_some_and(|r| r.iter().any(|e| e.name() == spec.role.name()));
        if !known {
            return Err(Error::Failed {
                resource,
                failure: Failure::NotRegistered(spec.role.name().to_owned()),
            });
        }
    }
    let (mine, theirs) = Pipe::pair()?;
    let mine_raw = mine.as_fd().as_raw_fd();
    let name = spec.name.clone();
    let pid = on_spawner(move || match spec.method {
        StartMethod::Spawn => spawn_exec(spec, theirs),
        StartMethod::Fork => spawn_fork(spec, theirs, mine_raw),
    })??;
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid as i32), None);
            return Err(Error::os_with_advice(
                &resource,
                "pidfd_open",
                e,
                "shmkit needs Linux 5.3 or later for process handles",
            ));
        }
    };
    let mut p = Proc {
        name,
        pid,
        pidfd,
        conn: mine,
        status: None,
    };
    p.handshake(start_timeout)?;
    Ok(p)
}

fn spawn_exec(spec: Spec, theirs: Pipe) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let resource = format!("process {}", spec.name);
    let parent = std::process::id();
    let theirs = OwnedFd::from(theirs);
    let mut keep: Vec<RawFd> = vec![theirs.as_raw_fd()];
    keep.extend(spec.fds.iter().map(|f| f.as_raw_fd()));
    let extra: Vec<String> = keep[1..].iter().map(|f| f.to_string()).collect();
    #[cfg(feature = "log")]
    let log_fd = crate::logging::for_child().and_then(|(fd, level, wait_us)| {
        // SAFETY: the logger's descriptor stays open for the life of the process.
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .ok()?;
        Some((owned, level, wait_us))
    });
    #[cfg(not(feature = "log"))]
    let log_fd: Option<(OwnedFd, usize, u64)> = None;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(a0) = std::env::args_os().next() {
        cmd.arg0(a0);
    }
    cmd.stdin(std::process::Stdio::null())
        .env(ENV_ROLE, format!("{}:{}", spec.kind, spec.role.name()))
        .env(ENV_FD, keep[0].to_string())
        .env(ENV_FDS, extra.join(","))
        .env(ENV_PARENT, parent.to_string())
        .env(ENV_NAME, &spec.name);
    if let Some((fd, level, wait_us)) = &log_fd {
        cmd.env(ENV_LOG, format!("{}:{level}:{wait_us}", fd.as_raw_fd()));
        keep.push(fd.as_raw_fd());
    }
    let owned = (theirs, spec.fds, log_fd);
    // SAFETY: the closure runs in the child between fork and exec; it calls only
    // prctl, getppid and fcntl (async-signal-safe) and allocates nothing. `owned` keeps
    // the descriptors open until the command is dropped after spawning.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &owned;
            child_guard(parent)?;
            for &fd in &keep {
                // Our own descriptors, kept under the same number: clear FD_CLOEXEC.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        Error::os(
            &resource,
            "spawn (fork + exec /proc/self/exe)",
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    })?;
    // Dropping std's handle neither waits nor kills; the Proc reaps it.
    Ok(child.id())
}

fn spawn_fork(spec: Spec, theirs: Pipe, mine_raw: RawFd) -> Result<u32> {
    let parent = std::process::id();
    let resource = format!("process {}", spec.name);
    // Fork in a possibly multi-threaded process: the child only runs this thread. The
    // documented hazard (locks held by other threads of the parent stay held in the
    // child) is the caller's choice of StartMethod::Fork.
    // SAFETY: the child sets its death signal, runs the entry and `_exit`s: it never
    // returns from this block or touches another thread's state.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            if child_guard(parent).is_err() {
                // SAFETY: _exit is async-signal-safe and ends the process.
                unsafe { libc::_exit(EXIT_ORPHAN) };
            }
            // The parent's end is the parent's; ours is `theirs`.
            // SAFETY: mine_raw is the parent's end of this child's pipe, copied into
            // this process by fork; nothing in the child uses it.
            unsafe { libc::close(mine_raw) };
            DISPATCHED.store(true, Ordering::Release);
            set_current(spec.name.clone(), parent);
            let extra: Vec<RawFd> = spec.fds.iter().map(|f| f.as_raw_fd()).collect();
            let code = child_main(spec.kind, Ok(spec.role), theirs, &extra);
            use std::io::Write;
            let _ = std::io::stdout().flush();
            // SAFETY: ends the child without running the parent's atexit handlers or
            // destructors of objects copied from the parent.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(theirs);
            Ok(child.as_raw() as u32)
        }
        Err(e) => Err(Error::os(&resource, "fork", e)),
    }
}

fn pidfd_open(pid: u32) -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open(pid, flags) takes two integers and returns a new descriptor.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

// ---------------------------------------------------------------------------------------
// A started process (parent side)

/// A child process the parent supervises: pid, pidfd, control pipe, exit status.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pidfd: OwnedFd,
    pub(crate) conn: Pipe,
    status: Option<ExitStatus>,
}

impl Proc {
    pub(crate) fn resource(&self) -> String {
        format!("process {} (pid {})", self.name, self.pid)
    }

    pub(crate) fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    fn handshake(&mut self, timeout: Duration) -> Result<()> {
        match self.conn.recv_timeout(timeout) {
            Ok(m) if m == [TAG_HELLO] => Ok(()),
            Ok(m) if m.first() == Some(&TAG_NOT_REGISTERED) => {
                let _ = self.wait_exit(Some(Instant::now() + timeout));
                Err(Error::Failed {
                    resource: self.resource(),
                    failure: Failure::NotRegistered(String::from_utf8_lossy(&m[1..]).into()),
                })
            }
            Ok(_) => Err(Error::corrupt(self.resource(), "unexpected first message")),
            Err(Error::Disconnected { .. }) => {
                let status = self.wait_exit(Some(Instant::now() + timeout))?;
                Err(Error::Failed {
                    resource: format!(
                        "{} at start (does main call shmkit::process::init first?)",
                        self.resource()
                    ),
                    failure: Failure::Died {
                        pid: self.pid,
                        status,
                    },
                })
            }
            Err(e) if e.is_timeout() => Err(Error::Timeout {
                resource: format!(
                    "{} (does main call shmkit::process::init first?)",
                    self.resource()
                ),
                op: "start: wait for the child to dispatch",
                timeout,
            }),
            Err(e) => Err(e),
        }
    }

    /// The exit status if the process has exited (reaping it), without waiting.
    pub(crate) fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.reap(true)?;
        }
        Ok(self.status)
    }

    /// Waits for the process to exit (until `deadline`) and reaps it.
    pub(crate) fn wait_exit(&mut self, deadline: Option<Instant>) -> Result<ExitStatus> {
        loop {
            if let Some(s) = self.try_status()? {
                return Ok(s);
            }
            let left = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout {
                            resource: self.resource(),
                            op: "join",
                            timeout: Duration::ZERO,
                        });
                    }
                    Some(d - now)
                }
                None => None,
            };
            crate::fdwait::wait_fd(self.pidfd.as_fd(), libc::POLLIN, left)
                .map_err(|e| Error::os(self.resource(), "poll(pidfd)", e))?;
        }
    }

    fn reap(&mut self, nohang: bool) -> Result<()> {
        let flags = nohang.then_some(WaitPidFlag::WNOHANG);
        loop {
            match waitpid(Pid::from_raw(self.pid as i32), flags) {
                Ok(WaitStatus::Exited(_, c)) => self.status = Some(ExitStatus::Code(c)),
                Ok(WaitStatus::Signaled(_, s, _)) => {
                    self.status = Some(ExitStatus::Signal(s as i32))
                }
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => continue, // stopped/continued: not an exit
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::os_with_advice(
                        self.resource(),
                        "waitpid",
                        e,
                        "something else reaped the child (SIGCHLD ignored, or waitpid(-1) elsewhere)",
                    ));
                }
            }
            return Ok(());
        }
    }

    /// Whether the process still runs (the pidfd is not readable yet).
    pub(crate) fn is_alive(&self) -> bool {
        if self.status.is_some() {
            return false;
        }
        crate::fdwait::wait_fd(self.pidfd.as_fd(), libc::POLLIN, Some(Duration::ZERO))
            .map(|r| r.is_empty())
            .unwrap_or(false)
    }

    /// Sends `sig` through the pidfd: never reaches a process that reused the pid. A
    /// process that already exited is not an error.
    pub(crate) fn signal(&self, sig: i32) -> Result<()> {
        // SAFETY: pidfd_send_signal(pidfd, sig, NULL, 0): integers and a null info pointer.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if r < 0 {
            let e = Errno::last();
            if e != Errno::ESRCH {
                return Err(Error::os(self.resource(), "pidfd_send_signal", e));
            }
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.reap(false);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Process / Child

/// A child process to start: Python's `multiprocessing.Process(target=entry, args=...)`.
/// See the [module docs](super).
pub struct Process<A: 'static, R: 'static> {
    entry: &'static Entry<A, R>,
    args: A,
    name: Option<String>,
    method: StartMethod,
    start_timeout: Duration,
}

impl<A: 'static, R: 'static> Process<A, R> {
    /// A process that will run `entry(args)`.
    pub fn new(entry: &'static Entry<A, R>, args: A) -> Self {
        Process {
            entry,
            args,
            name: None,
            method: StartMethod::default(),
            start_timeout: Duration::from_secs(30),
        }
    }

    /// Its name (default `Process-N`), as [`current_process`] reports it in the child.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How to start it (default [`StartMethod::Spawn`]).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.method = m;
        self
    }

    /// How long [`start`](Self::start) waits for the child to dispatch (default 30 s).
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    /// Starts the child and hands it the argument. Returns once the child runs its entry.
    ///
    /// Errors: the argument cannot be serialised ([`Failure::Codec`]); the entry is not
    /// registered with [`init`] ([`Failure::NotRegistered`]); the child exited before
    /// dispatching (its `main` does not call [`init`] first); system errors.
    pub fn start(self) -> Result<Child<R>> {
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let args = (self.entry.arg.to_vec)(&self.args, vec![TAG_ARGS]).map_err(|failure| {
            Error::Failed {
                resource: format!("process {name}"),
                failure,
            }
        })?;
        let proc = launch(
            Spec {
                kind: "process",
                role: self.entry,
                name,
                method: self.method,
                fds: Vec::new(),
            },
            self.start_timeout,
        )?;
        match proc.conn.send(&args) {
            // A child that died meanwhile is reported by join.
            Ok(()) | Err(Error::Disconnected { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(Child {
            proc,
            reply: Reply::Pending,
            decode: self.entry.ret.from_bytes,
        })
    }
}

#[derive(Debug)]
enum Reply {
    Pending,
    Got(Vec<u8>),
    Eof,
    Taken,
}

/// A started child process. Dropping it while the process runs kills it (`SIGKILL`) and
/// reaps it.
#[derive(Debug)]
#[must_use = "dropping a Child kills the process at once: keep it and `join` it"]
pub struct Child<R> {
    proc: Proc,
    reply: Reply,
    decode: fn(&[u8]) -> std::result::Result<R, Failure>,
}

impl<R> Child<R> {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.proc.name
    }

    /// Waits for the entry's return value and the process's exit.
    ///
    /// Errors: [`Error::Failed`] when the entry panicked ([`Failure::Panicked`] with the
    /// message), the result could not be (de)serialised, or the process died without a
    /// result ([`Failure::Died`] with the pid and the signal or exit code); asking twice
    /// is [`Error::InvalidArgument`].
    pub fn join(&mut self) -> Result<R> {
        self.join_until(None, Duration::ZERO)
    }

    /// [`join`](Self::join), waiting at most `timeout`: [`Error::Timeout`] leaves the
    /// child running and the handle usable (join again later).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.join_until(Instant::now().checked_add(timeout), timeout)
    }

    fn join_until(&mut self, deadline: Option<Instant>, timeout: Duration) -> Result<R> {
        let to_timeout = |e: Error, res: String| {
            if e.is_timeout() {
                Error::Timeout {
                    resource: res,
                    op: "join",
                    timeout,
                }
            } else {
                e
            }
        };
        if let Reply::Pending = self.reply {
            let r = match deadline {
                None => self.proc.conn.recv(),
                Some(d) => self
                    .proc
                    .conn
                    .recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            self.reply = match r {
                Ok(m) => Reply::Got(m),
                Err(Error::Disconnected { .. }) => Reply::Eof,
                Err(e) => return Err(to_timeout(e, self.proc.resource())),
            };
        }
        let status = self
            .proc
            .wait_exit(deadline)
            .map_err(|e| to_timeout(e, self.proc.resource()))?;
        let failed = |failure| Error::Failed {
            resource: self.proc.resource(),
            failure,
        };
        match std::mem::replace(&mut self.reply, Reply::Taken) {
            Reply::Got(m) => match m.split_first() {
                Some((&TAG_RESULT, r)) => (self.decode)(r).map_err(failed),
                Some((&TAG_PANIC, t)) => {
                    Err(failed(Failure::Panicked(String::from_utf8_lossy(t).into())))
                }
                Some((&TAG_CODEC, t)) => {
                    Err(failed(Failure::Codec(String::from_utf8_lossy(t).into())))
                }
                _ => Err(Error::corrupt(self.proc.resource(), "unexpected reply")),
            },
            Reply::Eof => Err(failed(Failure::Died {
                pid: self.proc.pid,
                status,
            })),
            Reply::Pending | Reply::Taken => Err(Error::invalid(
                self.proc.resource(),
                "join",
                "already joined",
            )),
        }
    }

    /// How it ended, if it has (reaps it; does not wait). Python's `exitcode` is
    /// [`ExitStatus::exitcode`].
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        self.proc.try_status()
    }

    /// Whether it still runs (asks its pidfd).
    pub fn is_alive(&self) -> bool {
        self.proc.is_alive()
    }

    /// Sends `SIGTERM` (through the pidfd).
    pub fn terminate(&self) -> Result<()> {
        self.proc.signal(libc::SIGTERM)
    }

    /// Sends `SIGKILL` (through the pidfd).
    pub fn kill(&self) -> Result<()> {
        self.proc.signal(libc::SIGKILL)
    }
}

impl<R> AsFd for Child<R> {
    /// The pidfd: readable once the process has exited.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.proc.pidfd()
    }
}

/// The errno of an I/O error (`EIO` when it has none).
pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
