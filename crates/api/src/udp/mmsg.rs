//! Batched datagram I/O: up to [`BATCH`] datagrams received with one `recvmmsg(2)` and up to
//! [`BATCH`] replies sent with one `sendmmsg(2)`, each reply to its own peer (which is why
//! this is not `quinn-udp`: it batches sends to one destination only, see `DEPENDENCIES.md`).
//!
//! The only unsafe code in the project lives here: the two libc calls and the socket address
//! the kernel writes. Every pointer handed to the kernel points into buffers that live in the
//! calling frame or in `self` for the whole call, and the kernel writes no more than the
//! lengths it is given. Non-Linux builds fall back to one datagram per call.

#![allow(unsafe_code)]

use std::{io, net::SocketAddr};

use tokio::net::UdpSocket;

/// Datagrams handled per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: one byte more than the largest request, so an oversized
/// datagram shows up as longer than the limit.
const SLOT: usize = super::MAX_REQUEST + 1;

/// Receive buffers for one batch, reused from batch to batch.
pub struct Inbox {
    bufs: Vec<[u8; SLOT]>,
    lens: [usize; BATCH],
    peers: [Option<SocketAddr>; BATCH],
    /// Where the kernel writes each sender's address.
    #[cfg(target_os = "linux")]
    names: Vec<socket2::SockAddrStorage>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            bufs: vec![[0; SLOT]; BATCH],
            lens: [0; BATCH],
            peers: [None; BATCH],
            #[cfg(target_os = "linux")]
            names: (0..BATCH)
                .map(|_| socket2::SockAddrStorage::zeroed())
                .collect(),
        }
    }
}

impl Inbox {
    /// Datagram `i` of the last batch (its bytes, cut at the slot size) and its sender
    /// (`None` for an address family other than IP, which nothing can answer).
    pub fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.bufs[i][..self.lens[i].min(SLOT)], self.peers[i])
    }

    /// Receives the datagrams waiting on `socket` (at least one, at most [`BATCH`]) without
    /// blocking; `WouldBlock` when there are none. Meant for `UdpSocket::try_io`.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use socket2::{SockAddr, SockAddrStorage};
        use std::os::fd::AsRawFd;

        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: SLOT,
        });
        // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for ((header, name), iov) in headers.iter_mut().zip(&mut self.names).zip(&mut iovs) {
            header.msg_hdr.msg_namelen = name.size_of();
            header.msg_hdr.msg_name = (name as *mut SockAddrStorage).cast();
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at its own address storage and iovec above, each iovec at
        // a buffer of `SLOT` bytes in `self.bufs`; all outlive the call.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
        for (i, header) in headers.iter().take(got).enumerate() {
            self.lens[i] = header.msg_len as usize;
            let name = std::mem::replace(&mut self.names[i], SockAddrStorage::zeroed());
            // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into `name`.
            let peer = unsafe { SockAddr::new(name, header.msg_hdr.msg_namelen) };
            self.peers[i] = peer.as_socket();
        }
        Ok(got)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let (len, peer) = socket.try_recv_from(&mut self.bufs[0])?;
        self.lens[0] = len;
        self.peers[0] = Some(peer);
        Ok(1)
    }
}

/// Sends the first replies of `replies` (at most [`BATCH`]) without blocking; returns how many
/// went (at least one), or the error of the first (`WouldBlock` when the socket is full).
/// Meant for `UdpSocket::try_io`.
#[cfg(target_os = "linux")]
pub fn send(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    use socket2::SockAddr;
    use std::os::fd::AsRawFd;

    let replies = &replies[..replies.len().min(BATCH)];
    let peers: Vec<SockAddr> = replies.iter().map(|(_, peer)| (*peer).into()).collect();
    let mut iovs: Vec<libc::iovec> = replies
        .iter()
        .map(|(bytes, _)| libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut headers: Vec<libc::mmsghdr> = (0..replies.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for ((header, peer), iov) in headers.iter_mut().zip(&peers).zip(&mut iovs) {
        header.msg_hdr.msg_name = peer.as_ptr().cast_mut().cast();
        header.msg_hdr.msg_namelen = peer.len();
        header.msg_hdr.msg_iov = iov;
        header.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: each header points at its own peer address and iovec, each iovec at a reply;
    // the kernel only reads them, and all outlive the call.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            libc::MSG_DONTWAIT as _,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

#[cfg(not(target_os = "linux"))]
pub fn send(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    match replies.first() {
        Some((bytes, peer)) => socket.try_send_to(bytes, *peer).map(|_| 1),
        None => Ok(0),
    }
}
