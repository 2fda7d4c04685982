//! Batched datagram I/O: up to [`BATCH`] datagrams received with one `recvmmsg(2)` and up to
//! [`BATCH`] replies sent with one `sendmmsg(2)`, each reply to its own peer (which is why
//! this is not `quinn-udp`: it batches sends to one destination only; see `DEPENDENCIES.md`
//! in `../shared/`, beside the project).
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
        let mut headers: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| {
            let name = &mut self.names[i];
            header(
                (name as *mut SockAddrStorage).cast(),
                name.size_of(),
                &raw mut iovs[i],
            )
        });
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

    // Fixed arrays, not heap lists: this runs for every batch of replies.
    let count = replies.len().min(BATCH);
    let peers: [Option<SockAddr>; BATCH] =
        std::array::from_fn(|i| replies.get(i).map(|(_, peer)| SockAddr::from(*peer)));
    let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
        iov_base: replies.get(i).map_or(std::ptr::null_mut(), |(bytes, _)| {
            bytes.as_ptr().cast_mut().cast()
        }),
        iov_len: replies.get(i).map_or(0, |(bytes, _)| bytes.len()),
    });
    let mut headers: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| match &peers[i] {
        Some(peer) => header(
            peer.as_ptr().cast_mut().cast(),
            peer.len(),
            &raw mut iovs[i],
        ),
        None => header(std::ptr::null_mut(), 0, &raw mut iovs[i]),
    });
    // SAFETY: each header points at its own peer address and iovec, each iovec at a reply;
    // the kernel only reads them, and all outlive the call.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT as _,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// The header of one datagram: its address (`name`, `namelen` bytes) and its one buffer.
#[cfg(target_os = "linux")]
fn header(
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    iov: *mut libc::iovec,
) -> libc::mmsghdr {
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
    header.msg_hdr.msg_name = name;
    header.msg_hdr.msg_namelen = namelen;
    header.msg_hdr.msg_iov = iov;
    header.msg_hdr.msg_iovlen = 1;
    header
}

#[cfg(not(target_os = "linux"))]
pub fn send(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    match replies.first() {
        Some((bytes, peer)) => socket.try_send_to(bytes, *peer).map(|_| 1),
        None => Ok(0),
    }
}
