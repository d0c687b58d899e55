//! Foreign shared-memory objects: made by C, Python or anything else, with no shmkit
//! header. Mapped whole, read and written as raw bytes or typed slices.

use std::fs::File;

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::name::Name;

/// A mapping of a POSIX shm object without a shmkit header.
///
/// ```no_run
/// let m = shmkit::segment::ForeignMap::open("psm_1234abcd")?;
/// println!("{} bytes", m.len());
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug)]
pub struct ForeignMap {
    map: MmapRaw,
    name: Name,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<ForeignMap>();
};

impl ForeignMap {
    /// Opens and maps the whole object read-write (`O_NOFOLLOW`).
    pub fn open(name: &str) -> Result<Self> {
        let name = Name::shm(name)?;
        let res = name.to_string();
        let fd = nix::sys::mman::shm_open(
            name.to_slashed().as_c_str(),
            OFlag::O_RDWR | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| Error::os(&res, "shm_open", e))?;
        let file = File::from(fd);
        let len = file
            .metadata()
            .map_err(|e| {
                Error::os(
                    &res,
                    "fstat",
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(5)),
                )
            })?
            .len();
        if len == 0 {
            return Err(Error::invalid(
                res,
                "open_foreign",
                "the object is empty (0 bytes)",
            ));
        }
        let len =
            usize::try_from(len).map_err(|_| Error::invalid(&res, "open_foreign", "too large"))?;
        let map = MmapOptions::new().len(len).map_raw(&file).map_err(|e| {
            Error::os(
                &res,
                "mmap(MAP_SHARED)",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(5)),
            )
        })?;
        Ok(ForeignMap { map, name })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for an empty mapping (never: `open` refuses empty objects).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Start of the mapping (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The object's name.
    pub fn resource(&self) -> String {
        self.name.to_string()
    }
}
