//! Shared memory for the adapters: a shmkit anonymous segment (a `memfd` mapped
//! `MAP_SHARED`, inherited by the forked peer at the same address), or a peer crate's
//! mapping for the peer mechanisms.

use shmkit::segment::Kind;
use shmkit::{ElemInfo, Layout, Result, Segment};

/// A zero-filled shared region, 64-byte aligned.
pub struct SharedMem {
    backing: Backing,
}

enum Backing {
    Shmkit(Box<Segment>),
    SharedMemory(shared_memory::Shmem),
}

impl SharedMem {
    /// `len` bytes in a shmkit anonymous segment.
    pub fn anonymous(len: usize) -> Result<SharedMem> {
        let layout = Layout::new(Kind::Bytes, ElemInfo::bytes(len.max(64) as u64));
        let seg = Segment::anonymous(&layout, |_| Ok(()))?;
        Ok(SharedMem {
            backing: Backing::Shmkit(Box::new(seg)),
        })
    }

    /// `len` bytes from the `shared_memory` crate (a named POSIX shm object it creates and
    /// unlinks when this value drops in the parent).
    pub fn shared_memory_crate(len: usize) -> Result<SharedMem> {
        let shm = shared_memory::ShmemConf::new()
            .size(len.max(64) + 64)
            .create()
            .map_err(|e| shmkit::Error::Unsupported {
                what: "shared_memory::ShmemConf::create",
                reason: e.to_string(),
            })?;
        Ok(SharedMem {
            backing: Backing::SharedMemory(shm),
        })
    }

    /// The start of the region (64-byte aligned).
    pub fn ptr(&self) -> *mut u8 {
        match &self.backing {
            Backing::Shmkit(seg) => seg.payload_ptr(),
            Backing::SharedMemory(shm) => {
                let p = shm.as_ptr();
                p.wrapping_add(p.align_offset(64))
            }
        }
    }

    /// The usable length.
    pub fn len(&self) -> usize {
        match &self.backing {
            Backing::Shmkit(seg) => seg.payload_len(),
            Backing::SharedMemory(shm) => {
                let p = shm.as_ptr();
                shm.len() - p.align_offset(64)
            }
        }
    }

    /// Never true (the region has at least 64 bytes).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
