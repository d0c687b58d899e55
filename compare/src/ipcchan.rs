//! `ipc-channel` (peer crate, 0.23): two `bytes_channel()`s (Unix `SOCK_SEQPACKET` pairs
//! underneath on Linux, large messages through a dedicated fd). The receive allocates a
//! `Vec` per message, which is part of this crate's cost. After the fork each side drops
//! the ends it does not use, so a dead peer shows as a disconnect instead of a hang.

use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender, bytes_channel};
use nix::unistd::Pid;
use shmkit::{Error, Result};

use crate::channel::{Channel, ChannelParams, Side};

/// Sender and receiver of one side.
struct Ends {
    tx: Option<IpcBytesSender>,
    rx: Option<IpcBytesReceiver>,
}

/// A two-way channel made of two ipc-channel byte channels.
pub struct IpcChannel {
    sides: [Ends; 2],
}

fn err(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Disconnected {
        resource: "ipc-channel".into(),
        op,
        detail: Some(e.to_string()),
    }
}

impl IpcChannel {
    /// Creates both byte channels.
    pub fn boxed(_: ChannelParams) -> Result<Box<dyn Channel>> {
        let (p_tx, c_rx) = bytes_channel().map_err(|e| err("bytes_channel", e))?;
        let (c_tx, p_rx) = bytes_channel().map_err(|e| err("bytes_channel", e))?;
        Ok(Box::new(IpcChannel {
            sides: [
                Ends {
                    tx: Some(p_tx),
                    rx: Some(p_rx),
                },
                Ends {
                    tx: Some(c_tx),
                    rx: Some(c_rx),
                },
            ],
        }))
    }
}

impl Channel for IpcChannel {
    fn attach(&mut self, side: Side, _peer: Pid) -> Result<()> {
        let other = &mut self.sides[side.peer().index()];
        other.tx = None;
        other.rx = None;
        Ok(())
    }

    fn send(&mut self, side: Side, msg: &[u8]) -> Result<()> {
        let tx = self.sides[side.index()]
            .tx
            .as_ref()
            .ok_or_else(|| err("send", "end closed"))?;
        tx.send(msg).map_err(|e| err("send", e))
    }

    fn recv(&mut self, side: Side, buf: &mut [u8]) -> Result<()> {
        let rx = self.sides[side.index()]
            .rx
            .as_ref()
            .ok_or_else(|| err("recv", "end closed"))?;
        let v = rx.recv().map_err(|e| err("recv", e))?;
        if v.len() != buf.len() {
            return Err(Error::corrupt(
                "ipc-channel",
                format!("received {} bytes, expected {}", v.len(), buf.len()),
            ));
        }
        buf.copy_from_slice(&v);
        Ok(())
    }
}
