//! Per-operation errors, in the shape of `std::sync::mpsc` / crossbeam-channel (see
//! `queue/errors.rs`), plus `Lagged(n)` as in `tokio::sync::broadcast`.
//!
//! The common outcomes are unit variants or carry a count: building and matching them
//! allocates nothing. The rare ones (corrupt shared state, a refused publisher role, a
//! message too large) are `Other(Box<Error>)`. Every type converts into [`Error`] with `?`.

use std::fmt;
use std::time::Duration;

use crate::error::Error;

/// The resource named by errors converted from these types (they carry no name, so the
/// hot path allocates nothing; the `Other` variants keep the topic's name).
const RESOURCE: &str = "shared-memory topic";

/// Why an attempt failed, inside the topic (mapped to the public types per operation).
pub(crate) enum Fail {
    /// Nothing to receive / no room (a `try_` call).
    Blocked,
    Timeout,
    Disconnected,
    Lagged(u64),
    Other(Box<Error>),
}

impl From<Error> for Fail {
    #[cold]
    fn from(e: Error) -> Self {
        Fail::Other(Box::new(e))
    }
}

fn lagged(op: &'static str, skipped: u64) -> Error {
    Error::Lagged {
        resource: RESOURCE.into(),
        op,
        skipped,
    }
}

fn disconnected(op: &'static str) -> Error {
    Error::Disconnected {
        resource: RESOURCE.into(),
        op,
        detail: None,
    }
}

fn timeout(op: &'static str) -> Error {
    Error::Timeout {
        resource: RESOURCE.into(),
        op,
        timeout: Duration::ZERO,
    }
}

fn would_block(op: &'static str) -> Error {
    Error::WouldBlock {
        resource: RESOURCE.into(),
        op,
    }
}

macro_rules! topic_error {
    ($(#[$m:meta])* $name:ident, $opv:ident = $op:literal {
        $($(#[$vm:meta])* $v:ident $(($n:ident: $t:ty))? => $msg:literal, $conv:expr;)*
    }) => {
        $(#[$m])*
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $v $(($t))?,)*
            /// Anything else (corrupt shared state, a refused publisher role, a message
            /// too large): the full error.
            Other(Box<Error>),
        }

        impl fmt::Display for $name {
            #[allow(unused_variables)]
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$v $(($n))? => write!(f, $msg),)*
                    $name::Other(e) => e.fmt(f),
                }
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Other(e) => Some(&**e),
                    _ => None,
                }
            }
        }

        impl From<$name> for Error {
            #[allow(unused_variables)]
            fn from(e: $name) -> Error {
                let $opv = $op;
                match e {
                    $($name::$v $(($n))? => $conv,)*
                    $name::Other(e) => *e,
                }
            }
        }
    };
}

topic_error! {
    /// Why [`try_recv`](super::Subscriber::try_recv) returned nothing.
    TryRecvError, op = "try_recv" {
        /// No new message now.
        Empty => "no new message on the topic", would_block(op);
        /// `n` messages were overwritten before this subscriber read them; the next
        /// receive returns the oldest message still retained.
        Lagged(n: u64) => "subscriber lagged: {n} messages were overwritten", lagged(op, n);
        /// No new message, and every publisher that attached is gone.
        Disconnected => "topic drained and every publisher is gone", disconnected(op);
    }
}

topic_error! {
    /// Why [`recv_timeout`](super::Subscriber::recv_timeout) returned nothing.
    RecvTimeoutError, op = "recv_timeout" {
        /// No message within the timeout.
        Timeout => "timed out waiting for a message on the topic", timeout(op);
        /// See [`TryRecvError::Lagged`].
        Lagged(n: u64) => "subscriber lagged: {n} messages were overwritten", lagged(op, n);
        /// No new message, and every publisher that attached is gone.
        Disconnected => "topic drained and every publisher is gone", disconnected(op);
    }
}

topic_error! {
    /// Why a blocking [`recv`](super::Subscriber::recv) returned nothing.
    RecvError, op = "recv" {
        /// See [`TryRecvError::Lagged`].
        Lagged(n: u64) => "subscriber lagged: {n} messages were overwritten", lagged(op, n);
        /// No new message, and every publisher that attached is gone.
        Disconnected => "topic drained and every publisher is gone", disconnected(op);
    }
}

topic_error! {
    /// Why [`try_send`](super::Publisher::try_send) (or `try_loan`) did not publish.
    TrySendError, op = "try_send" {
        /// `Block` policy: the slowest live subscriber has not read the slot this message
        /// would overwrite; or (several publishers) another publisher holds the role.
        Full => "topic full: the slowest subscriber has not caught up", would_block(op);
    }
}

topic_error! {
    /// Why [`send_timeout`](super::Publisher::send_timeout) (or `loan_timeout`) did not
    /// publish.
    SendTimeoutError, op = "send_timeout" {
        /// The slowest live subscriber did not catch up within the timeout.
        Timeout => "timed out waiting for the slowest subscriber", timeout(op);
    }
}

impl TryRecvError {
    /// True for `Empty`.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }
    /// True for `Disconnected`.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TryRecvError::Disconnected)
    }
}

impl RecvTimeoutError {
    /// True for `Timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }
    /// True for `Disconnected`.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvTimeoutError::Disconnected)
    }
}

impl Fail {
    #[inline]
    pub(crate) fn try_recv(self) -> TryRecvError {
        match self {
            Fail::Blocked | Fail::Timeout => TryRecvError::Empty,
            Fail::Disconnected => TryRecvError::Disconnected,
            Fail::Lagged(n) => TryRecvError::Lagged(n),
            Fail::Other(e) => TryRecvError::Other(e),
        }
    }
    #[inline]
    pub(crate) fn recv_timeout(self) -> RecvTimeoutError {
        match self {
            Fail::Blocked | Fail::Timeout => RecvTimeoutError::Timeout,
            Fail::Disconnected => RecvTimeoutError::Disconnected,
            Fail::Lagged(n) => RecvTimeoutError::Lagged(n),
            Fail::Other(e) => RecvTimeoutError::Other(e),
        }
    }
    #[inline]
    pub(crate) fn recv(self) -> RecvError {
        match self {
            Fail::Disconnected => RecvError::Disconnected,
            Fail::Lagged(n) => RecvError::Lagged(n),
            Fail::Other(e) => RecvError::Other(e),
            Fail::Blocked | Fail::Timeout => RecvError::Other(Box::new(timeout("recv"))),
        }
    }
    #[inline]
    pub(crate) fn try_send(self) -> TrySendError {
        match self {
            Fail::Other(e) => TrySendError::Other(e),
            _ => TrySendError::Full,
        }
    }
    #[inline]
    pub(crate) fn send_timeout(self) -> SendTimeoutError {
        match self {
            Fail::Other(e) => SendTimeoutError::Other(e),
            _ => SendTimeoutError::Timeout,
        }
    }
    #[inline]
    pub(crate) fn send(self) -> Error {
        match self {
            Fail::Other(e) => *e,
            _ => timeout("send"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_convertible() {
        assert!(size_of::<TryRecvError>() <= 16);
        let e: Error = TryRecvError::Lagged(3).into();
        assert!(matches!(e, Error::Lagged { skipped: 3, .. }));
        assert!(TryRecvError::Lagged(3).to_string().contains('3'));
        let e: Error = RecvError::Disconnected.into();
        assert!(matches!(e, Error::Disconnected { .. }));
        let e: Error = SendTimeoutError::Timeout.into();
        assert!(e.is_timeout());
    }
}
