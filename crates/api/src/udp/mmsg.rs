//! Batched datagram I/O: up to [`BATCH`] datagrams received with one `recvmmsg(2)` and up to
//! [`BATCH`] sent with one `sendmmsg(2)`, each to its own peer, a peer's run of them as one
//! segmented message ([`Sender`]). That is why this is not `quinn-udp`: it segments sends to
//! one destination per call and has no `sendmmsg` (see `DEPENDENCIES.md` in `../shared/`,
//! beside the project).
//!
//! The only unsafe code in the project lives here: the two libc calls, the control message
//! giving a run's segment size, and the socket address the kernel writes. Every pointer handed
//! to the kernel points into buffers that live in the calling frame or in `self` for the whole
//! call, and the kernel writes no more than the lengths it is given. Non-Linux builds fall back
//! to one datagram per call.

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

/// Most bytes in a datagram sent as one segment of a run: under the IPv6 minimum MTU (1,280)
/// less its headers, so no route refuses the run for its size. Larger datagrams (a big batch
/// answer) go one per message.
const MAX_SEGMENT: usize = 1200;

/// Sends datagrams, each to its own peer: one `sendmmsg(2)` per [`BATCH`], with each run of
/// datagrams of one size to one peer (the answers to a client's burst, say) as one message
/// the kernel splits (`UDP_SEGMENT`, segmentation offload): the run crosses the network stack
/// once, not once per datagram. A kernel or device that refuses that gets one datagram per
/// message from then on. Its receiver sees separate datagrams either way.
#[derive(Debug)]
pub struct Sender {
    segment: bool,
}

impl Default for Sender {
    fn default() -> Self {
        Self {
            segment: cfg!(target_os = "linux"),
        }
    }
}

impl Sender {
    /// Sends the first datagrams of `datagrams` (at most [`BATCH`]) without blocking;
    /// returns how many went (at least one), or the error of the first (`WouldBlock` when
    /// the socket is full). Meant for `UdpSocket::try_io`.
    #[cfg(target_os = "linux")]
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        socket: &UdpSocket,
        datagrams: &[(B, SocketAddr)],
    ) -> io::Result<usize> {
        let runs = Runs::of(datagrams, self.segment);
        match send(socket, datagrams, &runs) {
            // Refused for the segmenting (a device without checksum offload: EIO; a kernel
            // before 4.18, or a route with a tiny MTU: EINVAL): the same datagrams go one per
            // message.
            Err(e)
                if runs.lens[0] > 1
                    && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) =>
            {
                tracing::warn!(error = %e, "UDP segmentation refused: one datagram per message from now on");
                self.segment = false;
                send(socket, datagrams, &Runs::of(datagrams, false))
            }
            other => other,
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        socket: &UdpSocket,
        datagrams: &[(B, SocketAddr)],
    ) -> io::Result<usize> {
        match datagrams.first() {
            Some((bytes, peer)) => socket.try_send_to(bytes.as_ref(), *peer).map(|_| 1),
            None => Ok(0),
        }
    }
}

/// The messages of one `sendmmsg`: how many datagrams each carries, in order.
#[cfg(target_os = "linux")]
struct Runs {
    lens: [usize; BATCH],
    count: usize,
}

#[cfg(target_os = "linux")]
impl Runs {
    /// Runs of the first [`BATCH`] datagrams: with `segment`, each message takes the datagrams
    /// after its first that go to the same peer with the same size (the last may be shorter,
    /// as the kernel allows); without, one datagram each.
    fn of<B: AsRef<[u8]>>(datagrams: &[(B, SocketAddr)], segment: bool) -> Self {
        let datagrams = &datagrams[..datagrams.len().min(BATCH)];
        let mut runs = Runs {
            lens: [0; BATCH],
            count: 0,
        };
        let mut at = 0;
        while let Some((first, peer)) = datagrams.get(at) {
            let size = first.as_ref().len();
            let mut len = 1;
            if segment && (1..=MAX_SEGMENT).contains(&size) {
                for (bytes, to) in &datagrams[at + 1..] {
                    let n = bytes.as_ref().len();
                    if to != peer || n == 0 || n > size {
                        break;
                    }
                    len += 1;
                    if n < size {
                        break;
                    }
                }
            }
            runs.lens[runs.count] = len;
            runs.count += 1;
            at += len;
        }
        runs
    }
}

/// Room for one control message carrying a segment size, aligned as a `cmsghdr`.
#[cfg(target_os = "linux")]
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

// SAFETY: `CMSG_SPACE` only computes a size.
#[cfg(target_os = "linux")]
const CONTROL_LEN: usize = unsafe { libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) } as usize;

/// Sends `runs` of `datagrams`, a message each; returns how many datagrams went.
#[cfg(target_os = "linux")]
fn send<B: AsRef<[u8]>>(
    socket: &UdpSocket,
    datagrams: &[(B, SocketAddr)],
    runs: &Runs,
) -> io::Result<usize> {
    use socket2::SockAddr;
    use std::os::fd::AsRawFd;

    // Fixed arrays, not heap lists: this runs for every batch of replies.
    let peers: [Option<SockAddr>; BATCH] =
        std::array::from_fn(|i| datagrams.get(i).map(|(_, peer)| SockAddr::from(*peer)));
    let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
        iov_base: datagrams.get(i).map_or(std::ptr::null_mut(), |(bytes, _)| {
            bytes.as_ref().as_ptr().cast_mut().cast()
        }),
        iov_len: datagrams
            .get(i)
            .map_or(0, |(bytes, _)| bytes.as_ref().len()),
    });
    let mut controls = [Control([0; CONTROL_LEN]); BATCH];
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut first = 0;
    for (m, &len) in runs.lens[..runs.count].iter().enumerate() {
        let hdr = &mut headers[m].msg_hdr;
        if let Some(peer) = &peers[first] {
            hdr.msg_name = peer.as_ptr().cast_mut().cast();
            hdr.msg_namelen = peer.len();
        }
        hdr.msg_iov = &raw mut iovs[first];
        hdr.msg_iovlen = len as _;
        if len > 1 {
            // A run's datagrams are at most `MAX_SEGMENT` bytes.
            let size = iovs[first].iov_len as u16;
            hdr.msg_control = controls[m].0.as_mut_ptr().cast();
            hdr.msg_controllen = CONTROL_LEN as _;
            // SAFETY: `msg_control` points at `CONTROL_LEN` bytes aligned as a `cmsghdr`, room
            // for one header and a u16, so the first header and its data are in bounds.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) as _;
                libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(size);
            }
        }
        first += len;
    }
    // SAFETY: each header points at its run's peer address, iovecs and control message; each
    // iovec at a datagram; the kernel only reads them, and all outlive the call.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            runs.count as libc::c_uint,
            libc::MSG_DONTWAIT as _,
        )
    };
    let sent = usize::try_from(sent).map_err(|_| io::Error::last_os_error())?;
    Ok(runs.lens[..sent.min(runs.count)].iter().sum())
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use tokio::io::Interest;

    use super::*;

    fn lens(datagrams: &[(Vec<u8>, SocketAddr)]) -> Vec<usize> {
        let runs = Runs::of(datagrams, true);
        runs.lens[..runs.count].to_vec()
    }

    /// `(size, peer)` pairs as datagrams, each filled with its own index.
    fn datagrams(shape: &[(usize, SocketAddr)]) -> Vec<(Vec<u8>, SocketAddr)> {
        (0..)
            .zip(shape)
            .map(|(i, &(size, peer))| (vec![b'a' + i; size], peer))
            .collect()
    }

    #[test]
    fn a_run_is_one_peer_s_datagrams_of_one_size_and_a_last_shorter_one() {
        let (a, b) = (
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        );
        let shape = [
            (9, a),
            (9, a),
            (9, a),
            (4, a),
            (4, a),
            (9, b),
            (10, b),
            (9, b),
        ];
        assert_eq!(lens(&datagrams(&shape)), [4, 1, 1, 2]);
        // Over the segment limit, or empty: alone.
        let shape = [(1201, a), (1201, a), (0, a), (0, a), (1200, a), (1200, a)];
        assert_eq!(lens(&datagrams(&shape)), [1, 1, 1, 1, 2]);
        // No more than a batch, and without segmenting one datagram per message.
        let many = datagrams(&[(5, a); BATCH + 3]);
        assert_eq!(lens(&many), [BATCH]);
        let runs = Runs::of(&many, false);
        assert_eq!(runs.lens[..runs.count], [1; BATCH]);
    }

    /// Runs of datagrams to two peers arrive as the datagrams they are, in order, and the
    /// kernel took the segmented sends (the sender did not fall back).
    #[tokio::test]
    async fn segmented_runs_arrive_as_separate_datagrams() {
        let receivers = [(); 2].map(|()| std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let [a, b] = [0, 1].map(|i| receivers[i].local_addr().unwrap());
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let shape = [
            (700, a),
            (700, a),
            (700, a),
            (300, a),
            (50, b),
            (50, b),
            (1500, a),
            (700, a),
        ];
        let datagrams = datagrams(&shape);
        let mut sender = Sender::default();
        let mut done = 0;
        while done < datagrams.len() {
            socket.writable().await.unwrap();
            match socket.try_io(Interest::WRITABLE, || {
                sender.send(&socket, &datagrams[done..])
            }) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("send failed: {e}"),
            }
        }
        assert!(sender.segment, "the kernel refused segmentation");
        let mut buf = vec![0; 65_536];
        for (receiver, peer) in receivers.iter().zip([a, b]) {
            receiver
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            for (bytes, _) in datagrams.iter().filter(|(_, to)| *to == peer) {
                let n = receiver.recv(&mut buf).unwrap();
                assert!(
                    buf[..n] == bytes[..],
                    "to {peer}: got {n} bytes starting {:?}, expected {} of {:?}",
                    buf[0] as char,
                    bytes.len(),
                    bytes[0] as char
                );
            }
        }
    }
}
