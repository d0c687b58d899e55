//! Per-operation errors in the shape of `std::sync::mpsc` / crossbeam-channel.
//!
//! The common outcomes — empty, full, timed out, disconnected — are unit variants (or
//! hand the value back): building, returning and matching them allocates nothing. The
//! rare ones (corrupt shared state, a refused SPSC role, a message too large) are
//! [`Other`](TryRecvError::Other), boxing the crate's [`Error`] with its full message.
//! Every type converts into [`Error`] with `?`.

use std::fmt;
use std::time::Duration;

use crate::error::Error;

/// The resource named by errors converted from these types (they carry no name, so that
/// the hot path allocates nothing; the `Other` variants keep the queue's name).
const RESOURCE: &str = "shared-memory queue";

/// Why a claim failed, inside the queue (mapped to the public types per operation).
pub(crate) enum Fail {
    /// Empty or full (a `try_` call).
    Blocked,
    Timeout,
    Disconnected,
    Other(Box<Error>),
}

impl From<Error> for Fail {
    #[cold]
    fn from(e: Error) -> Self {
        Fail::Other(Box::new(e))
    }
}

fn would_block(op: &'static str) -> Error {
    Error::WouldBlock {
        resource: RESOURCE.into(),
        op,
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

macro_rules! recv_error {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $msg:literal, $conv:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $v,)*
            /// Anything else (corrupt shared state, a refused SPSC role, a message too
            /// large): the full error.
            Other(Box<Error>),
        }

        impl $name {
            /// True for `Disconnected`.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$v => f.write_str($msg),)*
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
            fn from(e: $name) -> Error {
                match e {
                    $($name::$v => $conv,)*
                    $name::Other(e) => *e,
                }
            }
        }
    };
}

recv_error! {
    /// Why [`try_recv`](super::Queue::try_recv) returned nothing.
    TryRecvError {
        /// No message now; producers are still attached (or none ever was).
        Empty => "receiving on an empty queue", would_block("try_recv");
        /// No message, and every producer that attached is gone.
        Disconnected => "receiving on an empty and disconnected queue", disconnected("try_recv");
    }
}

recv_error! {
    /// Why [`recv_timeout`](super::Queue::recv_timeout) (or a zero-copy receive with a
    /// timeout) returned nothing.
    RecvTimeoutError {
        /// No message within the timeout.
        Timeout => "timed out waiting on receive operation", timeout("recv_timeout");
        /// No message, and every producer that attached is gone.
        Disconnected => "channel is empty and disconnected", disconnected("recv_timeout");
    }
}

recv_error! {
    /// Why a blocking [`recv`](super::Queue::recv) returned nothing.
    RecvError {
        /// No message, and every producer that attached is gone.
        Disconnected => "receiving on an empty and disconnected queue", disconnected("recv");
    }
}

impl RecvTimeoutError {
    /// True for `Timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }
}

impl TryRecvError {
    /// True for `Empty`.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }
}

macro_rules! send_error {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $msg:literal, $conv:expr;)* }) => {
        $(#[$m])*
        #[non_exhaustive]
        pub enum $name<T> {
            $($(#[$vm])* $v(T),)*
            /// Anything else (corrupt shared state, a refused SPSC role, a message too
            /// large), with the value back and the full error.
            Other(T, Box<Error>),
        }

        impl<T> $name<T> {
            /// The value that was not sent.
            pub fn into_inner(self) -> T {
                match self {
                    $($name::$v(t) => t,)*
                    $name::Other(t, _) => t,
                }
            }

            /// True for `Disconnected`.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected(_))
            }
        }

        // Like crossbeam: no `T: Debug` bound, the value is not printed.
        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$v(_) => f.write_str(concat!(stringify!($v), "(..)")),)*
                    $name::Other(_, e) => f.debug_tuple("Other").field(&"..").field(e).finish(),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$v(_) => f.write_str($msg),)*
                    $name::Other(_, e) => e.fmt(f),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Other(_, e) => Some(&**e),
                    _ => None,
                }
            }
        }

        impl<T> From<$name<T>> for Error {
            fn from(e: $name<T>) -> Error {
                match e {
                    $($name::$v(_) => $conv,)*
                    $name::Other(_, e) => *e,
                }
            }
        }
    };
}

send_error! {
    /// Why [`try_send`](super::Queue::try_send) did not send; the value comes back.
    TrySendError {
        /// No free slot now.
        Full => "sending on a full queue", would_block("try_send");
        /// Every consumer that attached is gone.
        Disconnected => "sending on a disconnected queue", disconnected("try_send");
    }
}

send_error! {
    /// Why [`send_timeout`](super::Queue::send_timeout) (or a zero-copy reserve with a
    /// timeout) did not send; the value comes back.
    SendTimeoutError {
        /// No free slot within the timeout.
        Timeout => "timed out waiting on send operation", timeout("send_timeout");
        /// Every consumer that attached is gone.
        Disconnected => "sending on a disconnected queue", disconnected("send_timeout");
    }
}

send_error! {
    /// Why a blocking [`send`](super::Queue::send) did not send; the value comes back.
    SendError {
        /// Every consumer that attached is gone.
        Disconnected => "sending on a disconnected queue", disconnected("send");
    }
}

impl<T> TrySendError<T> {
    /// True for `Full`.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

impl<T> SendTimeoutError<T> {
    /// True for `Timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendTimeoutError::Timeout(_))
    }
}

impl Fail {
    #[inline]
    pub(crate) fn try_recv(self) -> TryRecvError {
        match self {
            Fail::Blocked | Fail::Timeout => TryRecvError::Empty,
            Fail::Disconnected => TryRecvError::Disconnected,
            Fail::Other(e) => TryRecvError::Other(e),
        }
    }

    #[inline]
    pub(crate) fn recv_timeout(self) -> RecvTimeoutError {
        match self {
            Fail::Blocked | Fail::Timeout => RecvTimeoutError::Timeout,
            Fail::Disconnected => RecvTimeoutError::Disconnected,
            Fail::Other(e) => RecvTimeoutError::Other(e),
        }
    }

    #[inline]
    pub(crate) fn recv(self) -> RecvError {
        match self {
            Fail::Other(e) => RecvError::Other(e),
            // A blocking receive ends only with a message, a disconnection or an error.
            _ => RecvError::Disconnected,
        }
    }

    #[inline]
    pub(crate) fn try_send<T>(self, v: T) -> TrySendError<T> {
        match self {
            Fail::Blocked | Fail::Timeout => TrySendError::Full(v),
            Fail::Disconnected => TrySendError::Disconnected(v),
            Fail::Other(e) => TrySendError::Other(v, e),
        }
    }

    #[inline]
    pub(crate) fn send_timeout<T>(self, v: T) -> SendTimeoutError<T> {
        match self {
            Fail::Blocked | Fail::Timeout => SendTimeoutError::Timeout(v),
            Fail::Disconnected => SendTimeoutError::Disconnected(v),
            Fail::Other(e) => SendTimeoutError::Other(v, e),
        }
    }

    #[inline]
    pub(crate) fn send<T>(self, v: T) -> SendError<T> {
        match self {
            Fail::Other(e) => SendError::Other(v, e),
            _ => SendError::Disconnected(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_convertible() {
        assert!(size_of::<TryRecvError>() <= 16);
        assert!(size_of::<TrySendError<u64>>() <= 24);
        let e: Error = TryRecvError::Empty.into();
        assert!(matches!(e, Error::WouldBlock { .. }));
        let e: Error = SendError::Disconnected(5u8).into();
        assert!(matches!(e, Error::Disconnected { .. }));
        assert_eq!(TrySendError::Full(7).into_inner(), 7);
        assert_eq!(
            format!("{:?}", TrySendError::Full(String::new())),
            "Full(..)"
        );
        assert!(RecvTimeoutError::Timeout.is_timeout());
        let e: Error = RecvTimeoutError::Timeout.into();
        assert!(e.is_timeout());
    }
}
