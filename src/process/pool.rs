//! [`Pool`]: worker processes fed through shmkit queues (feature `process`).

use std::os::fd::RawFd;

use super::Role;
use crate::pipe::Pipe;

pub(crate) fn worker_main(_role: &dyn Role, _pipe: Pipe, _fds: &[RawFd]) -> i32 {
    2
}
