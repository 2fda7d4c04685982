//! Batched datagram I/O: up to [`BATCH`] datagrams received with one `recvmmsg(2)` and up to
//! [`BATCH`] sent with one `sendmmsg(2)`, each to its own peer, a peer's run of them as one
//! segmented message ([`Sender`]). That is why this is not `quinn-udp`: it segments sends to
//! one destination per call and has no `sendmmsg` (see `DEPENDENCIES.md` in `../shared/`,
//! beside the project).
//!
//! On a socket bound to every address (`0.0.0.0`, `[::]`), each datagram's own destination is
//! asked for ([`receive_destinations`]) and its reply sent from it: a host with several
//! addresses would otherwise answer from the one its routing picks, and a client that sent to
//! another one (a connected socket) would never see the reply.
//!
//! The only unsafe code in the project lives here: the libc calls (`recvmmsg`, `sendmmsg`,
//! `getsockopt` asking for segmentation, `setsockopt` asking for destinations), the control
//! messages (a run's segment size, a reply's source address, a datagram's destination), and
//! the socket address the kernel writes. Every pointer handed to the kernel points into
//! buffers that live in the calling frame or in `self` for the whole call, and the kernel
//! writes no more than the lengths it is given. Non-Linux builds fall back to one datagram per
//! call, sent from the address routing picks.

#![allow(unsafe_code)]

use std::{
    io,
    net::{IpAddr, SocketAddr},
};

use tokio::{io::Interest, net::UdpSocket};

/// Datagrams handled per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: one byte more than the largest request, so an oversized
/// datagram shows up as longer than the limit.
const SLOT: usize = super::MAX_REQUEST + 1;

/// A datagram to send: its bytes, where to, and from which of this host's addresses (`None`:
/// the socket's own, or the one routing picks).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub bytes: Vec<u8>,
    pub to: SocketAddr,
    pub from: Option<IpAddr>,
}

/// A datagram received ([`Inbox::datagram`]).
pub struct Incoming<'a> {
    /// Its bytes, cut at the slot size.
    pub bytes: &'a [u8],
    /// Its sender; `None` for an address family other than IP, which nothing can answer.
    pub peer: Option<SocketAddr>,
    /// The address it was sent to, when the socket asks ([`receive_destinations`]): where its
    /// reply goes from.
    pub local: Option<IpAddr>,
}

/// Receive buffers for one batch, reused from batch to batch.
pub struct Inbox {
    bufs: Vec<[u8; SLOT]>,
    lens: [usize; BATCH],
    peers: [Option<SocketAddr>; BATCH],
    locals: [Option<IpAddr>; BATCH],
    /// Where the kernel writes each sender's address, and each datagram's destination.
    #[cfg(target_os = "linux")]
    names: Vec<socket2::SockAddrStorage>,
    #[cfg(target_os = "linux")]
    controls: Vec<Control>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            bufs: vec![[0; SLOT]; BATCH],
            lens: [0; BATCH],
            peers: [None; BATCH],
            locals: [None; BATCH],
            #[cfg(target_os = "linux")]
            names: (0..BATCH)
                .map(|_| socket2::SockAddrStorage::zeroed())
                .collect(),
            #[cfg(target_os = "linux")]
            controls: vec![Control([0; CONTROL_LEN]); BATCH],
        }
    }
}

impl Inbox {
    /// Datagram `i` of the last batch.
    pub fn datagram(&self, i: usize) -> Incoming<'_> {
        Incoming {
            bytes: &self.bufs[i][..self.lens[i].min(SLOT)],
            peer: self.peers[i],
            local: self.locals[i],
        }
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
        let controls = self.controls.as_mut_ptr();
        let mut headers: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| {
            let name = &mut self.names[i];
            let mut header = header(
                (name as *mut SockAddrStorage).cast(),
                name.size_of(),
                &raw mut iovs[i],
                1,
            );
            // SAFETY: `i < BATCH`, the length of `self.controls`.
            header.msg_hdr.msg_control = unsafe { controls.add(i) }.cast();
            header.msg_hdr.msg_controllen = CONTROL_LEN as _;
            header
        });
        // SAFETY: each header points at its own address storage, control buffer and iovec
        // above, each iovec at a buffer of `SLOT` bytes in `self.bufs`; all outlive the call.
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
            self.locals[i] = destination(&header.msg_hdr);
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

/// Asks the kernel for each datagram's destination on `socket` (bound to every address), so
/// that its reply goes from there ([`Incoming::local`], [`Outgoing::from`]). An IPv6 socket
/// learns it for the IPv4 datagrams it takes too, as mapped addresses.
#[cfg(target_os = "linux")]
pub fn receive_destinations(socket: &socket2::Socket, ipv6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    set_option(socket.as_raw_fd(), level, name, 1)
}

/// Sets an integer socket option (one socket2 does not offer).
#[cfg(target_os = "linux")]
fn set_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the kernel reads one `c_int` from `value`.
    let done = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as _,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn receive_destinations(_socket: &socket2::Socket, _ipv6: bool) -> io::Result<()> {
    Ok(())
}

/// The destination the kernel gave in a received message's control data, if one a reply can
/// go from: IPv4's local address (for a broadcast, the receiving interface's), IPv6's
/// destination unless it is multicast (or a mapped IPv4 broadcast or multicast).
#[cfg(target_os = "linux")]
fn destination(header: &libc::msghdr) -> Option<IpAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr};

    // SAFETY: `header` is one the kernel filled: its control data is `msg_controllen` bytes of
    // whole control messages in the buffer it points at, which `CMSG_FIRSTHDR`/`CMSG_NXTHDR`
    // walk without leaving, and each message's data is as long as its type says.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            let data = libc::CMSG_DATA(cmsg);
            let fits = |len: usize| (*cmsg).cmsg_len as usize >= libc::CMSG_LEN(len as _) as usize;
            if level == libc::IPPROTO_IP
                && kind == libc::IP_PKTINFO
                && fits(size_of::<libc::in_pktinfo>())
            {
                let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                let addr = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                return Some(IpAddr::V4(addr)).filter(|_| !addr.is_unspecified());
            }
            if level == libc::IPPROTO_IPV6
                && kind == libc::IPV6_PKTINFO
                && fits(size_of::<libc::in6_pktinfo>())
            {
                let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                let addr = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                let group = match addr.to_ipv4_mapped() {
                    Some(v4) => v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified(),
                    None => addr.is_multicast() || addr.is_unspecified(),
                };
                return (!group).then_some(IpAddr::V6(addr));
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// Most bytes in a datagram sent as a segment of a run. A segment and its headers must fit the
/// route's MTU: 1,200 bytes fit IPv6's smallest (1,280) and any usual IPv4 path; on a smaller
/// one the run is refused and goes again a datagram per message. Larger datagrams (a big batch
/// answer) go one per message.
const MAX_SEGMENT: usize = 1200;
// A run is at most a batch: within the kernel's 64 segments, and its bytes within one
// datagram's 65,507.
const _: () = assert!(BATCH <= 64 && BATCH * MAX_SEGMENT <= 65_507);

/// Sends datagrams, each to its own peer: one `sendmmsg(2)` per [`BATCH`], with each run of
/// datagrams of one size to one peer (the answers to a client's burst, say) as one message
/// the kernel splits (`UDP_SEGMENT`, segmentation offload): the run crosses the network stack
/// once, not once per datagram. Its receiver gets separate datagrams either way.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Whether runs go as one message: the kernel knows `UDP_SEGMENT` (4.18 and later; an
    /// older one would ignore it and send a run as one datagram) and no device refused it.
    #[cfg(target_os = "linux")]
    segment: bool,
}

impl Sender {
    /// A sender on `socket`, sending runs as one message if its kernel can.
    #[cfg(target_os = "linux")]
    pub fn new(socket: &UdpSocket) -> Self {
        use std::os::fd::AsRawFd;

        let (mut size, mut len): (libc::c_int, libc::socklen_t) =
            (0, size_of::<libc::c_int>() as _);
        // SAFETY: the kernel writes at most `len` bytes into `size`, and `len` itself.
        let known = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&raw mut size).cast(),
                &raw mut len,
            )
        } == 0;
        if !known {
            tracing::info!("no UDP segmentation in this kernel: one datagram per message");
        }
        Self { segment: known }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new(_socket: &UdpSocket) -> Self {
        Self {}
    }

    /// Sends the first datagrams of `datagrams` (at most [`BATCH`]) without blocking;
    /// returns how many went (at least one), or the error of the first (`WouldBlock` when
    /// the socket is full). Meant for `UdpSocket::try_io`.
    #[cfg(target_os = "linux")]
    fn send(&mut self, socket: &UdpSocket, datagrams: &[Outgoing]) -> io::Result<usize> {
        let result = self.send_runs(socket, datagrams);
        match (&result, datagrams.first()) {
            (Err(e), Some(first))
                if first.from.is_some()
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENETUNREACH | libc::EADDRNOTAVAIL)
                    ) =>
            {
                // The first cannot go from the address it was sent to (a subnet's broadcast
                // reaching an IPv6 socket, which learns the broadcast address; a link-local
                // address without its interface): it goes from the one routing picks.
                let alone = [Outgoing {
                    from: None,
                    ..first.clone()
                }];
                send(socket, &alone, &Runs::of(&alone, false))
            }
            _ => result,
        }
    }

    /// [`Sender::send`] as asked: runs as one message each while the kernel takes them.
    #[cfg(target_os = "linux")]
    fn send_runs(&mut self, socket: &UdpSocket, datagrams: &[Outgoing]) -> io::Result<usize> {
        let runs = Runs::of(datagrams, self.segment);
        let refused = match send(socket, datagrams, &runs) {
            Err(e)
                if runs.lens[0] > 1
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EMSGSIZE | libc::EINVAL)
                    ) =>
            {
                e
            }
            other => return other,
        };
        // The first run was refused as one message, so its datagrams go again one per message.
        // A device without checksum offload (EIO) refuses every run: runs stop. A route with a
        // small MTU (EMSGSIZE), or a peer refused anyway (EINVAL: port 0, say), is this
        // run's alone.
        if refused.raw_os_error() == Some(libc::EIO) {
            tracing::warn!(error = %refused, "UDP segmentation refused: one datagram per message from now on");
            self.segment = false;
        }
        send(socket, datagrams, &Runs::of(datagrams, false))
    }

    #[cfg(not(target_os = "linux"))]
    fn send(&mut self, socket: &UdpSocket, datagrams: &[Outgoing]) -> io::Result<usize> {
        match datagrams.first() {
            Some(datagram) => socket.try_send_to(&datagram.bytes, datagram.to).map(|_| 1),
            None => Ok(0),
        }
    }

    /// Sends `datagrams` in order, waiting for room in the socket's buffer when it is full;
    /// returns how many went, and the error that stopped the rest, if one did.
    pub async fn send_all(
        &mut self,
        socket: &UdpSocket,
        datagrams: &[Outgoing],
    ) -> (usize, io::Result<()>) {
        let mut done = 0;
        while done < datagrams.len() {
            match socket.try_io(Interest::WRITABLE, || self.send(socket, &datagrams[done..])) {
                Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
                Ok(sent) => done += sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = socket.writable().await {
                        return (done, Err(e));
                    }
                }
                Err(e) => return (done, Err(e)),
            }
        }
        (done, Ok(()))
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
    /// after its first that go to the same peer from the same address with the same size (the
    /// last may be shorter, as the kernel allows); without, one datagram each.
    fn of(datagrams: &[Outgoing], segment: bool) -> Self {
        let datagrams = &datagrams[..datagrams.len().min(BATCH)];
        let mut runs = Runs {
            lens: [0; BATCH],
            count: 0,
        };
        let mut at = 0;
        while let Some(first) = datagrams.get(at) {
            let size = first.bytes.len();
            let mut len = 1;
            if segment && (1..=MAX_SEGMENT).contains(&size) {
                for next in &datagrams[at + 1..] {
                    if (next.to, next.from) != (first.to, first.from)
                        || next.bytes.is_empty()
                        || next.bytes.len() > size
                    {
                        break;
                    }
                    len += 1;
                    if next.bytes.len() < size {
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

/// Room for a message's control data, aligned as a `cmsghdr`: a run's segment size and a
/// reply's source address going out, a datagram's destination coming in.
#[cfg(target_os = "linux")]
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

// SAFETY: `CMSG_SPACE` only computes a size.
#[cfg(target_os = "linux")]
const CONTROL_LEN: usize = unsafe {
    libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint)
        + libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as libc::c_uint)
} as usize;
// IPv4's address data is the smaller.
#[cfg(target_os = "linux")]
const _: () = assert!(size_of::<libc::in_pktinfo>() <= size_of::<libc::in6_pktinfo>());

/// Sends `runs` of `datagrams`, a message each; returns how many datagrams went.
#[cfg(target_os = "linux")]
fn send(socket: &UdpSocket, datagrams: &[Outgoing], runs: &Runs) -> io::Result<usize> {
    use socket2::SockAddr;
    use std::os::fd::AsRawFd;

    // Fixed arrays, not heap lists: this runs for every batch of replies. A message's address
    // is its run's, written as the message is.
    let mut peers: [Option<SockAddr>; BATCH] = [const { None }; BATCH];
    let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| match datagrams.get(i) {
        Some(datagram) => libc::iovec {
            iov_base: datagram.bytes.as_ptr().cast_mut().cast(),
            iov_len: datagram.bytes.len(),
        },
        None => libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        },
    });
    let mut controls = [Control([0; CONTROL_LEN]); BATCH];
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    // One pointer into each array, taken once: a run's header points at several iovecs.
    let (iov_at, control_at) = (iovs.as_mut_ptr(), controls.as_mut_ptr());
    let mut first = 0;
    for (m, &len) in runs.lens[..runs.count].iter().enumerate() {
        let run = &datagrams[first];
        let peer = peers[m].insert(SockAddr::from(run.to));
        let (name, namelen) = (peer.as_ptr().cast_mut().cast(), peer.len());
        // SAFETY: `first + len <= BATCH` and `m < BATCH`: both stay in their arrays.
        let (iov, control) = unsafe { (iov_at.add(first), control_at.add(m)) };
        headers[m] = header(name, namelen, iov, len);
        // A run's datagrams are at most `MAX_SEGMENT` bytes.
        let segment = (len > 1).then_some(run.bytes.len() as u16);
        if segment.is_some() || run.from.is_some() {
            let hdr = &mut headers[m].msg_hdr;
            hdr.msg_control = control.cast();
            hdr.msg_controllen = CONTROL_LEN as _;
            // SAFETY: `msg_control` points at `CONTROL_LEN` bytes aligned as a `cmsghdr`, room
            // for a header and a u16 and a header and an IPv6 (or smaller IPv4) address
            // data, so both messages and their data are in bounds; `msg_controllen` is then
            // cut to what was written.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
                let mut used = 0;
                if let Some(size) = segment {
                    used += put(cmsg, libc::SOL_UDP, libc::UDP_SEGMENT, size);
                    cmsg = cmsg.cast::<u8>().add(used).cast();
                }
                match run.from {
                    Some(IpAddr::V4(from)) => {
                        let info = libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: libc::in_addr {
                                s_addr: u32::from(from).to_be(),
                            },
                            ipi_addr: libc::in_addr { s_addr: 0 },
                        };
                        used += put(cmsg, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
                    }
                    Some(IpAddr::V6(from)) => {
                        let info = libc::in6_pktinfo {
                            ipi6_addr: libc::in6_addr {
                                s6_addr: from.octets(),
                            },
                            ipi6_ifindex: 0,
                        };
                        used += put(cmsg, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
                    }
                    None => {}
                }
                hdr.msg_controllen = used as _;
            }
        }
        first += len;
    }
    // SAFETY: each header points at its own peer address and control messages and at its
    // run's iovecs, each iovec at a datagram; the kernel only reads them, and all outlive the
    // call.
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

/// Writes a control message of `level` and `kind` carrying `data` at `cmsg`; returns the room
/// it takes (`CMSG_SPACE`), where the next one starts.
///
/// # Safety
/// `cmsg` is aligned as a `cmsghdr` and has `CMSG_SPACE(size_of::<T>())` bytes of room.
#[cfg(target_os = "linux")]
unsafe fn put<T>(
    cmsg: *mut libc::cmsghdr,
    level: libc::c_int,
    kind: libc::c_int,
    data: T,
) -> usize {
    let len = size_of::<T>() as libc::c_uint;
    // SAFETY: as the caller promises, the header and `len` bytes of data after it are in room.
    unsafe {
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
        libc::CMSG_DATA(cmsg).cast::<T>().write_unaligned(data);
        libc::CMSG_SPACE(len) as usize
    }
}

/// The header of one message: its address (`name`, `namelen` bytes) and its `iovlen` buffers
/// from `iov` on.
#[cfg(target_os = "linux")]
fn header(
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    iov: *mut libc::iovec,
    iovlen: usize,
) -> libc::mmsghdr {
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
    header.msg_hdr.msg_name = name;
    header.msg_hdr.msg_namelen = namelen;
    header.msg_hdr.msg_iov = iov;
    header.msg_hdr.msg_iovlen = iovlen as _;
    header
}

#[cfg(all(test, target_os = "linux"))]
// The helpers too: a failed socket call fails the test.
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn lens(datagrams: &[Outgoing]) -> Vec<usize> {
        let runs = Runs::of(datagrams, true);
        runs.lens[..runs.count].to_vec()
    }

    /// `(size, peer)` pairs as datagrams, each filled with its own index.
    fn datagrams(shape: &[(usize, SocketAddr)]) -> Vec<Outgoing> {
        (0..)
            .zip(shape)
            .map(|(i, &(size, to))| Outgoing {
                bytes: vec![b'a' + i; size],
                to,
                from: None,
            })
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
        // Replies from another of this host's addresses: a run of their own.
        let mut from_two = datagrams(&[(9, a); 4]);
        for datagram in &mut from_two[2..] {
            datagram.from = Some([127, 0, 0, 2].into());
        }
        assert_eq!(lens(&from_two), [2, 2]);
        // Over the segment limit, or empty: alone.
        let shape = [(1201, a), (1201, a), (0, a), (0, a), (1200, a), (1200, a)];
        assert_eq!(lens(&datagrams(&shape)), [1, 1, 1, 1, 2]);
        // No more than a batch, and without segmenting one datagram per message.
        let many = datagrams(&[(5, a); BATCH + 3]);
        assert_eq!(lens(&many), [BATCH]);
        let runs = Runs::of(&many, false);
        assert_eq!(runs.lens[..runs.count], [1; BATCH]);
    }

    /// The shape the socket tests send: a run of four to `a`, a run of two to `b`, then two
    /// alone to `a` (one over the segment limit).
    fn sent(a: SocketAddr, b: SocketAddr) -> Vec<Outgoing> {
        datagrams(&[
            (700, a),
            (700, a),
            (700, a),
            (300, a),
            (50, b),
            (50, b),
            (1500, a),
            (700, a),
        ])
    }

    /// Two receiving sockets on loopback, a socket to send from, and [`sent`]'s datagrams to
    /// the two.
    async fn loopback() -> ([std::net::UdpSocket; 2], UdpSocket, Vec<Outgoing>) {
        let receivers = [(); 2].map(|()| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            socket
        });
        let [a, b] = [0, 1].map(|i| receivers[i].local_addr().unwrap());
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (receivers, socket, sent(a, b))
    }

    /// Sends all of `datagrams` with `sender`.
    async fn send_all(sender: &mut Sender, socket: &UdpSocket, datagrams: &[Outgoing]) {
        let (sent, result) = sender.send_all(socket, datagrams).await;
        assert_eq!(
            (sent, result.err().map(|e| e.to_string())),
            (datagrams.len(), None)
        );
    }

    /// Checks that `receiver` gets its datagrams of `datagrams` in order, grouped as `groups`
    /// (how many datagrams come in each buffer it reads), and nothing more.
    fn check(receiver: &std::net::UdpSocket, datagrams: &[Outgoing], groups: &[usize]) {
        let peer = receiver.local_addr().unwrap();
        let mut own = datagrams.iter().filter(|d| d.to == peer).map(|d| &d.bytes);
        let want: Vec<Vec<u8>> = groups
            .iter()
            .map(|&n| own.by_ref().take(n).flatten().copied().collect())
            .collect();
        let mut buf = vec![0; 65_536];
        let mut got: Vec<Vec<u8>> = (0..groups.len())
            .map(|_| {
                let n = receiver.recv(&mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect();
        receiver.set_nonblocking(true).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        if let Ok(n) = receiver.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        let shown = |buffers: &[Vec<u8>]| -> Vec<(usize, char)> {
            buffers.iter().map(|b| (b.len(), b[0] as char)).collect()
        };
        assert!(
            got == want,
            "to {peer}: {:?}, not {:?}",
            shown(&got),
            shown(&want)
        );
    }

    /// Runs arrive as the datagrams they are, in order, none twice.
    #[tokio::test]
    async fn runs_arrive_as_separate_datagrams() {
        let (receivers, socket, datagrams) = loopback().await;
        let mut sender = Sender::new(&socket);
        send_all(&mut sender, &socket, &datagrams).await;
        check(&receivers[0], &datagrams, &[1; 6]);
        check(&receivers[1], &datagrams, &[1; 2]);
    }

    /// A run is one segmented message: a receiver that takes them whole (`UDP_GRO`) gets the
    /// run in one buffer.
    #[tokio::test]
    async fn a_run_goes_as_one_message() {
        use std::os::fd::AsRawFd;

        let (receivers, socket, datagrams) = loopback().await;
        set_option(receivers[0].as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1).unwrap();
        let mut sender = Sender::new(&socket);
        assert!(sender.segment, "this kernel has no UDP segmentation");
        send_all(&mut sender, &socket, &datagrams).await;
        check(&receivers[0], &datagrams, &[4, 1, 1]);
    }

    /// A run the kernel refuses as one message (here: a socket sending without checksums,
    /// which segmentation needs) goes again a datagram per message, and later runs are still
    /// tried as one.
    #[tokio::test]
    async fn a_refused_run_goes_a_datagram_per_message() {
        use std::os::fd::AsRawFd;

        let (receivers, socket, datagrams) = loopback().await;
        set_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
        let mut sender = Sender::new(&socket);
        send_all(&mut sender, &socket, &datagrams).await;
        assert!(
            sender.segment,
            "a refused run stops runs only for a device that refuses them"
        );
        check(&receivers[0], &datagrams, &[1; 6]);
        check(&receivers[1], &datagrams, &[1; 2]);
    }

    /// A socket bound to every address by the listeners' own `bind`.
    fn wildcard(ipv6: bool) -> io::Result<UdpSocket> {
        let any = if ipv6 { "[::]:0" } else { "0.0.0.0:0" };
        let options = super::super::UdpOptions {
            workers: 1,
            recv_buffer_bytes: 1 << 20,
            send_buffer_bytes: 1 << 20,
        };
        let mut sockets = super::super::bind(any.parse().unwrap(), options)?;
        UdpSocket::from_std(sockets.remove(0))
    }

    /// Three requests from a client connected to `to` (a port of `server`'s), received as the
    /// listeners receive; what the server learnt of each (sender, destination); then the
    /// replies sent back
    /// from their destinations, or from where routing picks with `reply_from_destination`
    /// false, and how many of them the client got.
    async fn exchange(
        server: &UdpSocket,
        to: SocketAddr,
        reply_from_destination: bool,
    ) -> (Vec<(Option<SocketAddr>, Option<IpAddr>)>, usize) {
        let client = std::net::UdpSocket::bind(SocketAddr::new(to.ip(), 0)).unwrap();
        client.connect(to).unwrap();
        for _ in 0..3 {
            client.send(b"ping").unwrap();
        }
        let mut inbox = Inbox::default();
        let mut learnt = Vec::new();
        let running = tokio_util::sync::CancellationToken::new();
        while learnt.len() < 3 {
            let got = super::super::receive(server, &mut inbox, &running)
                .await
                .unwrap();
            learnt.extend((0..got).map(|i| {
                let datagram = inbox.datagram(i);
                assert_eq!(datagram.bytes, b"ping");
                (datagram.peer, datagram.local)
            }));
        }
        let replies: Vec<Outgoing> = learnt
            .iter()
            .map(|&(peer, local)| Outgoing {
                bytes: b"pong".to_vec(),
                to: peer.unwrap(),
                from: local.filter(|_| reply_from_destination),
            })
            .collect();
        send_all(&mut Sender::new(server), server, &replies).await;
        client
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0; 16];
        let answered = (0..3)
            .take_while(|_| client.recv(&mut buf).is_ok_and(|n| &buf[..n] == b"pong"))
            .count();
        (learnt, answered)
    }

    /// A reply that cannot go from the address given (not one of this host's) goes from the
    /// one routing picks.
    #[tokio::test]
    async fn a_reply_that_cannot_go_from_its_address_goes_from_the_routed_one() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let reply = Outgoing {
            bytes: b"pong".to_vec(),
            to: receiver.local_addr().unwrap(),
            from: Some([192, 0, 2, 1].into()),
        };
        send_all(&mut Sender::new(&socket), &socket, &[reply]).await;
        let mut buf = [0; 16];
        let (n, from) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"pong"[..], socket.local_addr().unwrap())
        );
    }

    /// A client that sent to one of several addresses of the host (here 127.0.0.2, on
    /// loopback) and takes replies only from it gets them: each reply goes from its request's
    /// destination, learnt on receipt. From where routing picks (127.0.0.1), it would get none.
    #[tokio::test]
    async fn replies_go_from_the_address_their_request_was_sent_to() {
        let server = wildcard(false).unwrap();
        let port = server.local_addr().unwrap().port();
        let to = SocketAddr::from(([127, 0, 0, 2], port));
        let (learnt, answered) = exchange(&server, to, true).await;
        for (peer, local) in learnt {
            assert_eq!(peer.map(|p| p.ip()), Some(to.ip()));
            assert_eq!(local, Some(to.ip()));
        }
        assert_eq!(answered, 3);
        assert_eq!(exchange(&server, to, false).await.1, 0);
        // An IPv6 socket bound to every address learns IPv4 destinations as mapped addresses,
        // and its own (when this host has IPv6 loopback).
        let Ok(server) = wildcard(true) else {
            return;
        };
        let port = server.local_addr().unwrap().port();
        let mapped = Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped();
        let to_v4 = SocketAddr::from(([127, 0, 0, 2], port));
        let (learnt, answered) = exchange(&server, to_v4, true).await;
        assert_eq!(learnt[0].1, Some(IpAddr::V6(mapped)));
        assert_eq!(answered, 3);
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            let to_v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            let (learnt, answered) = exchange(&server, to_v6, true).await;
            assert_eq!(learnt[0].1, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
            assert_eq!(answered, 3);
        }
    }
}
