//! A network namespace the ground makes (`ip netns`): the node's own
//! network, with addresses of its own on its own loopback. Nothing in it
//! reaches the machine's interfaces. What its processes must reach on the
//! machine's loopback (the apiserver, the AWS proxy) is carried by a
//! [`Bridge`] the test process holds: a listener inside the namespace whose
//! connections it joins to a loopback port. [`Netns::reach`] carries the
//! other way, from a loopback port to an address inside (a pod's port).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};

pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// A new namespace with its loopback up and `addresses` on it.
    pub fn create(addresses: &[Ipv4Addr]) -> Result<Netns> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "byoc-ground-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let file = match File::open(format!("/run/netns/{name}")) {
            Ok(f) => f,
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(e).context("opening the new network namespace");
            }
        };
        let ns = Netns { name, file };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        for a in addresses {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{a}/32"),
                "dev",
                "lo",
            ])?;
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `cmd` start inside the namespace. Only its network is the
    /// namespace's: files and mounts stay the machine's, so the kubelet and
    /// containerd share the mounts they make.
    pub fn enter(&self, cmd: &mut Command) {
        let fd = self.file.as_raw_fd();
        // SAFETY: setns(2) is async-signal-safe; the descriptor is open in
        // the child until exec.
        unsafe {
            cmd.pre_exec(move || join(fd));
        }
    }

    /// Runs `f` on a thread inside the namespace: the sockets it makes
    /// belong to the namespace for as long as they live.
    fn inside<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let fd = self.file.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                join(fd)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("thread in the namespace panicked")))
        })
    }

    /// Carries connections to `inside` (an address of the namespace) to
    /// `loopback_port` on the machine's loopback.
    pub fn bridge(&self, inside: SocketAddr, loopback_port: u16) -> Result<Bridge> {
        let listener = self
            .inside(|| TcpListener::bind(inside))
            .with_context(|| format!("listening on {inside} in {}", self.name))?;
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, loopback_port));
        Bridge::serve(listener, move || TcpStream::connect(target))
    }

    /// A loopback port whose connections are carried to `inside`.
    pub fn reach(self: &Arc<Self>, inside: SocketAddr) -> Result<Bridge> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let ns = Arc::clone(self);
        Bridge::serve(listener, move || ns.inside(|| TcpStream::connect(inside)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn join(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) on a namespace file descriptor we hold open.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A listener whose every connection is joined to a new one made by its
/// `connect`. Connections from a peer that is [cut](Bridge::cut) stay open
/// but carry nothing, as across a network partition. Stops listening when
/// dropped.
pub struct Bridge {
    port: u16,
    fd: RawFd,
    stopped: Arc<AtomicBool>,
    cut: Arc<Mutex<HashSet<IpAddr>>>,
}

impl Bridge {
    fn serve(
        listener: TcpListener,
        connect: impl Fn() -> io::Result<TcpStream> + Send + 'static,
    ) -> Result<Bridge> {
        let port = listener.local_addr()?.port();
        let fd = listener.as_raw_fd();
        let stopped = Arc::new(AtomicBool::new(false));
        let cut: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
        let (stop, held) = (Arc::clone(&stopped), Arc::clone(&cut));
        std::thread::Builder::new()
            .name(format!("bridge-{port}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let Ok(peer) = conn.peer_addr() else { continue };
                    let Ok(far) = connect() else {
                        let _ = conn.shutdown(Shutdown::Both);
                        continue;
                    };
                    let (Ok(conn2), Ok(far2)) = (conn.try_clone(), far.try_clone()) else {
                        continue;
                    };
                    let h = Arc::clone(&held);
                    std::thread::spawn(move || pump(conn, far, peer.ip(), &h));
                    let h = Arc::clone(&held);
                    std::thread::spawn(move || pump(far2, conn2, peer.ip(), &h));
                }
            })?;
        Ok(Bridge {
            port,
            fd,
            stopped,
            cut,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on nothing passes to or from `peer`'s connections, open or new.
    pub fn cut(&self, peer: IpAddr) {
        if let Ok(mut c) = self.cut.lock() {
            c.insert(peer);
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // SAFETY: shutdown(2) wakes the accept of the listener the thread
        // still owns; the descriptor stays open until that thread ends.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, peer: IpAddr, cut: &Mutex<HashSet<IpAddr>>) {
    let is_cut = || cut.lock().map(|c| c.contains(&peer)).unwrap_or(false);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Across a cut what is sent is lost; the connection stays open.
        if is_cut() {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
