//! TEMPORARY STUB of the lead's liveness API (pid-based, for development only); replaced
//! by the real `src/liveness.rs` from `main` before merging.
#![allow(missing_docs)]

pub const TOKEN_MAX: u32 = (1 << 30) - 1;

#[derive(Debug, Default)]
pub struct Liveness {
    _p: (),
}

static STUB: Liveness = Liveness { _p: () };

impl Liveness {
    pub fn token(&self) -> crate::Result<u32> {
        Ok(std::process::id() & TOKEN_MAX)
    }
    pub fn token_alive(&self, token: u32) -> bool {
        if token == 0 || token > TOKEN_MAX {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{token}/stat")) {
            Ok(s) => !s.contains(") Z "),
            Err(_) => false,
        }
    }
}

impl crate::segment::Segment {
    pub fn liveness(&self) -> &Liveness {
        &STUB
    }
}
