//! The verbs layer over rdma-sys: a device and its protection domain, memory registrations,
//! and reliable-connected queue pairs that read a peer's registered memory.
//!
//! Everything unsafe about RDMA is in this file. Its invariants: a registration owns the bytes
//! it registers (so the NIC never touches freed memory); a queue pair owns its completion queue
//! and keeps its device alive; a READ's local buffer stays registered and unmoved until its
//! completion has been polled (or the queue pair is destroyed).

use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdma_sys::{
    ibv_access_flags, ibv_alloc_pd, ibv_close_device, ibv_context, ibv_cq, ibv_create_cq, ibv_create_qp,
    ibv_dealloc_pd, ibv_dereg_mr, ibv_destroy_cq, ibv_destroy_qp, ibv_free_device_list, ibv_get_device_list,
    ibv_get_device_name, ibv_gid, ibv_modify_qp, ibv_mr, ibv_mtu, ibv_open_device, ibv_pd, ibv_poll_cq, ibv_port_attr,
    ibv_post_send, ibv_qp, ibv_qp_attr, ibv_qp_attr_mask, ibv_qp_init_attr, ibv_qp_state, ibv_qp_type, ibv_query_gid,
    ibv_reg_mr, ibv_send_flags, ibv_send_wr, ibv_sge, ibv_wc, ibv_wc_status, ibv_wr_opcode,
};

use super::{QpEndpoint, RemoteRegion};
use crate::error::{Error, Result};

fn rdma_error(what: &str) -> Error {
    Error::io("rdma", what, std::io::Error::last_os_error())
}

/// The names of the host's RDMA devices, or `None` if the verbs library finds none.
pub(super) fn device_names() -> Option<Vec<String>> {
    let mut n = 0;
    // SAFETY: ibv_get_device_list returns a NULL-terminated array of `n` devices, or NULL;
    // we free it with ibv_free_device_list and copy the names out before.
    unsafe {
        let list = ibv_get_device_list(&mut n);
        if list.is_null() {
            return None;
        }
        let names = (0..usize::try_from(n).unwrap_or(0))
            .filter_map(|i| {
                let name = ibv_get_device_name(*list.add(i));
                (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned())
            })
            .collect();
        ibv_free_device_list(list);
        Some(names)
    }
}

/// An opened RDMA device with a protection domain.
#[derive(Debug)]
pub struct Device {
    ctx: NonNull<ibv_context>,
    pd: NonNull<ibv_pd>,
    name: String,
}

// SAFETY: verbs contexts and protection domains may be used from any thread.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    /// Opens the first device the verbs library lists.
    pub fn open_first() -> Result<Self> {
        let mut n = 0;
        // SAFETY: as in `device_names`; the device pointer is used before the list is freed,
        // and the context it opens outlives the list.
        unsafe {
            let list = ibv_get_device_list(&mut n);
            if list.is_null() || n == 0 {
                if !list.is_null() {
                    ibv_free_device_list(list);
                }
                return Err(Error::Config { field: "rdma".into(), reason: "no RDMA device on this host".into() });
            }
            let device = *list;
            let name = CStr::from_ptr(ibv_get_device_name(device)).to_string_lossy().into_owned();
            let ctx = ibv_open_device(device);
            ibv_free_device_list(list);
            let ctx = NonNull::new(ctx).ok_or_else(|| rdma_error("open device"))?;
            let Some(pd) = NonNull::new(ibv_alloc_pd(ctx.as_ptr())) else {
                ibv_close_device(ctx.as_ptr());
                return Err(rdma_error("allocate protection domain"));
            };
            Ok(Device { ctx, pd, name })
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers `bytes` for remote reading; the registration keeps them (and the device)
    /// alive.
    pub fn register(self: &Arc<Self>, bytes: Bytes) -> Result<Registration> {
        let access = ibv_access_flags::IBV_ACCESS_REMOTE_READ.0 as i32;
        // SAFETY: the region is `bytes`, which the registration owns until it deregisters;
        // only remote reads are granted, so the NIC never writes to it.
        let mr = unsafe { ibv_reg_mr(self.pd.as_ptr(), bytes.as_ptr() as *mut _, bytes.len(), access) };
        let mr = NonNull::new(mr).ok_or_else(|| rdma_error("register memory"))?;
        Ok(Registration { mr, bytes, _device: self.clone() })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: created in `open_first`; registrations and queue pairs hold an `Arc` of the
        // device, so none is left when this runs.
        unsafe {
            ibv_dealloc_pd(self.pd.as_ptr());
            ibv_close_device(self.ctx.as_ptr());
        }
    }
}

/// An object registered for remote reading.
#[derive(Debug)]
pub struct Registration {
    mr: NonNull<ibv_mr>,
    bytes: Bytes,
    _device: Arc<Device>,
}

// SAFETY: a memory region handle may be used and released from any thread.
unsafe impl Send for Registration {}
unsafe impl Sync for Registration {}

impl Registration {
    /// Where a consumer reads it.
    pub fn region(&self) -> RemoteRegion {
        // SAFETY: `mr` is a live registration.
        let rkey = unsafe { self.mr.as_ref().rkey };
        RemoteRegion { addr: self.bytes.as_ptr() as u64, len: self.bytes.len() as u64, rkey }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: registered in `Device::register` and not deregistered before.
        unsafe {
            ibv_dereg_mr(self.mr.as_ptr());
        }
    }
}

/// The port every queue pair uses, and the index of the global id it routes by.
const PORT: u8 = 1;
const GID_INDEX: i32 = 0;
/// Outstanding work requests per queue pair, and the completions its queue holds.
const QUEUE_DEPTH: u32 = 16;
/// The largest RDMA READ posted at once; longer regions are read in pieces.
const MAX_READ: u64 = 1 << 30;
/// How long a READ may take before the queue pair counts as broken.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A reliable-connected queue pair and its completion queue. The consumer posts RDMA READs on
/// it; the node keeps the other end, which only answers them in hardware.
#[derive(Debug)]
pub struct QueuePair {
    qp: NonNull<ibv_qp>,
    cq: NonNull<ibv_cq>,
    mtu: ibv_mtu::Type,
    local: QpEndpoint,
    device: Arc<Device>,
    /// The next work request's id: never reused, so a late completion of an abandoned READ
    /// can never pass for a later one.
    next_wr: u64,
    /// Why the queue pair may not be used again: after a timeout or a failed READ it is moved
    /// to the error state, and reads on it are refused.
    broken: Option<String>,
}

// SAFETY: verbs objects may be used from any thread; `read` takes `&mut self`, so one thread
// at a time posts and polls.
unsafe impl Send for QueuePair {}
unsafe impl Sync for QueuePair {}

fn check(rc: i32, what: &str) -> Result<()> {
    if rc == 0 { Ok(()) } else { Err(Error::io("rdma", what, std::io::Error::from_raw_os_error(rc.abs()))) }
}

impl QueuePair {
    /// A new queue pair on `device`, in the INIT state, granting remote reads.
    pub fn new(device: &Arc<Device>) -> Result<Self> {
        let ctx = device.ctx.as_ptr();
        // SAFETY: plain verbs calls on a live context; every object made here is destroyed in
        // `Drop` (or right here when a later step fails).
        unsafe {
            let cq =
                NonNull::new(ibv_create_cq(ctx, QUEUE_DEPTH as i32, std::ptr::null_mut(), std::ptr::null_mut(), 0))
                    .ok_or_else(|| rdma_error("create completion queue"))?;
            let mut init: ibv_qp_init_attr = std::mem::zeroed();
            init.send_cq = cq.as_ptr();
            init.recv_cq = cq.as_ptr();
            init.qp_type = ibv_qp_type::IBV_QPT_RC;
            init.cap.max_send_wr = QUEUE_DEPTH;
            init.cap.max_recv_wr = 1;
            init.cap.max_send_sge = 1;
            init.cap.max_recv_sge = 1;
            let Some(qp) = NonNull::new(ibv_create_qp(device.pd.as_ptr(), &mut init)) else {
                ibv_destroy_cq(cq.as_ptr());
                return Err(rdma_error("create queue pair"));
            };
            let mut pair = QueuePair {
                qp,
                cq,
                mtu: ibv_mtu::IBV_MTU_1024,
                local: QpEndpoint { qpn: (*qp.as_ptr()).qp_num, psn: 0, lid: 0, gid: [0; 16] },
                device: device.clone(),
                next_wr: 0,
                broken: None,
            };
            let mut port: ibv_port_attr = std::mem::zeroed();
            check(rdma_sys::___ibv_query_port(ctx, PORT, &mut port), "query port")?;
            let mut gid: ibv_gid = std::mem::zeroed();
            check(ibv_query_gid(ctx, PORT, GID_INDEX, &mut gid), "query gid")?;
            pair.mtu = port.active_mtu;
            pair.local.lid = port.lid;
            pair.local.gid = gid.raw;
            pair.local.psn = random_psn();

            let mut attr: ibv_qp_attr = std::mem::zeroed();
            attr.qp_state = ibv_qp_state::IBV_QPS_INIT;
            attr.pkey_index = 0;
            attr.port_num = PORT;
            attr.qp_access_flags = ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask::IBV_QP_PORT
                | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
            check(ibv_modify_qp(qp.as_ptr(), &mut attr, mask.0 as i32), "move queue pair to INIT")?;
            Ok(pair)
        }
    }

    /// What the peer needs to connect to this queue pair.
    pub fn endpoint(&self) -> QpEndpoint {
        self.local
    }

    /// Connects to the peer's queue pair: INIT → ready to receive → ready to send.
    pub fn connect(&mut self, remote: &QpEndpoint) -> Result<()> {
        // SAFETY: modifies the queue pair this value owns, with attributes built here.
        unsafe {
            let mut attr: ibv_qp_attr = std::mem::zeroed();
            attr.qp_state = ibv_qp_state::IBV_QPS_RTR;
            attr.path_mtu = self.mtu;
            attr.dest_qp_num = remote.qpn;
            attr.rq_psn = remote.psn;
            attr.max_dest_rd_atomic = QUEUE_DEPTH as u8;
            attr.min_rnr_timer = 12;
            attr.ah_attr.dlid = remote.lid;
            attr.ah_attr.port_num = PORT;
            attr.ah_attr.is_global = 1;
            attr.ah_attr.grh.dgid.raw = remote.gid;
            attr.ah_attr.grh.sgid_index = GID_INDEX as u8;
            attr.ah_attr.grh.hop_limit = 1;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_AV
                | ibv_qp_attr_mask::IBV_QP_PATH_MTU
                | ibv_qp_attr_mask::IBV_QP_DEST_QPN
                | ibv_qp_attr_mask::IBV_QP_RQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
                | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
            check(ibv_modify_qp(self.qp.as_ptr(), &mut attr, mask.0 as i32), "move queue pair to RTR")?;

            let mut attr: ibv_qp_attr = std::mem::zeroed();
            attr.qp_state = ibv_qp_state::IBV_QPS_RTS;
            attr.timeout = 14;
            attr.retry_cnt = 7;
            attr.rnr_retry = 7;
            attr.sq_psn = self.local.psn;
            attr.max_rd_atomic = QUEUE_DEPTH as u8;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_TIMEOUT
                | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
                | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
                | ibv_qp_attr_mask::IBV_QP_SQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
            check(ibv_modify_qp(self.qp.as_ptr(), &mut attr, mask.0 as i32), "move queue pair to RTS")
        }
    }

    /// Reads the peer's `region` into new memory of this process, one-sidedly. Blocks the
    /// calling thread until the NIC completes (run it where blocking is allowed).
    pub fn read(&mut self, region: &RemoteRegion) -> Result<Bytes> {
        if let Some(why) = &self.broken {
            return Err(Error::PeerGone {
                endpoint: "RDMA queue pair".into(),
                reason: format!("unusable since {why}; connect a new one"),
            });
        }
        let len = usize::try_from(region.len).map_err(|_| rdma_config("region larger than this host's memory"))?;
        let mut buffer = vec![0u8; len];
        if len == 0 {
            return Ok(Bytes::new());
        }
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as i32;
        // SAFETY: `buffer` is neither moved nor freed until `ibv_dereg_mr` below, after every
        // READ into it has completed (or failed: a failed completion means the NIC is done
        // with the request).
        let mr = unsafe { ibv_reg_mr(self.device.pd.as_ptr(), buffer.as_mut_ptr().cast(), len, access) };
        let mr = NonNull::new(mr).ok_or_else(|| rdma_error("register the read buffer"))?;
        let outcome = self.read_into(region, &mut buffer, mr);
        if let Err(e) = &outcome {
            // Nothing more goes through this queue pair: the error state flushes whatever is
            // outstanding, and later reads are refused.
            self.broken = Some(e.to_string());
            self.enter_error_state();
        }
        if matches!(outcome, Err(Error::Timeout { .. })) {
            // The queue pair is broken and the NIC may still write: leak the buffer (and its
            // registration) rather than free memory under it.
            std::mem::forget(buffer);
            return outcome.map(|()| Bytes::new());
        }
        // SAFETY: registered above; no READ into it is outstanding once `read_into` returned
        // anything but a timeout (a failed completion means the NIC is done with it).
        unsafe { ibv_dereg_mr(mr.as_ptr()) };
        outcome?;
        Ok(Bytes::from(buffer))
    }

    fn read_into(&mut self, region: &RemoteRegion, buffer: &mut [u8], mr: NonNull<ibv_mr>) -> Result<()> {
        let mut offset = 0u64;
        while offset < region.len {
            let piece = (region.len - offset).min(MAX_READ);
            // SAFETY: the scatter entry points into `buffer`, registered as `mr`; the work
            // request lives on this stack frame until its completion is polled below.
            unsafe {
                let mut sge =
                    ibv_sge { addr: buffer.as_mut_ptr() as u64 + offset, length: piece as u32, lkey: mr.as_ref().lkey };
                let mut wr: ibv_send_wr = std::mem::zeroed();
                wr.wr_id = self.next_wr;
                wr.sg_list = &mut sge;
                wr.num_sge = 1;
                wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
                wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
                wr.wr.rdma.remote_addr = region.addr + offset;
                wr.wr.rdma.rkey = region.rkey;
                let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
                check(ibv_post_send(self.qp.as_ptr(), &mut wr, &mut bad), "post RDMA READ")?;
            }
            let wr_id = self.next_wr;
            self.next_wr += 1;
            self.complete(wr_id)?;
            offset += piece;
        }
        Ok(())
    }

    /// Polls the completion queue for the work request `wr_id`.
    fn complete(&mut self, wr_id: u64) -> Result<()> {
        let started = Instant::now();
        loop {
            // SAFETY: polls this queue pair's own completion queue into a local entry.
            let (n, wc) = unsafe {
                let mut wc: ibv_wc = std::mem::zeroed();
                (ibv_poll_cq(self.cq.as_ptr(), 1, &mut wc), wc)
            };
            if n < 0 {
                return Err(rdma_error("poll completion queue"));
            }
            if n == 1 {
                if completion_for(wc.wr_id, wr_id) == Completion::Stale {
                    continue;
                }
                if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                    return Err(Error::io(
                        "rdma",
                        "RDMA READ",
                        std::io::Error::other(format!(
                            "completion status {} (vendor error {})",
                            wc.status, wc.vendor_err
                        )),
                    ));
                }
                return Ok(());
            }
            if started.elapsed() > READ_TIMEOUT {
                return Err(Error::Timeout { what: "RDMA READ".into(), seconds: READ_TIMEOUT.as_secs_f64() });
            }
            std::thread::yield_now();
        }
    }
}

/// What a polled completion means to a reader waiting for `wanted`.
#[derive(Debug, PartialEq, Eq)]
enum Completion {
    /// The awaited request's (done, or failed: see its status).
    Ours,
    /// An earlier request's, which its reader gave up on: ignored, whatever its status.
    Stale,
}

fn completion_for(wr_id: u64, wanted: u64) -> Completion {
    if wr_id == wanted { Completion::Ours } else { Completion::Stale }
}

impl QueuePair {
    /// Moves the queue pair to the error state: outstanding work requests are flushed and no
    /// new one is executed.
    fn enter_error_state(&mut self) {
        // SAFETY: modifies the queue pair this value owns; only the state is set.
        unsafe {
            let mut attr: ibv_qp_attr = std::mem::zeroed();
            attr.qp_state = ibv_qp_state::IBV_QPS_ERR;
            let mask = ibv_qp_attr_mask::IBV_QP_STATE;
            if ibv_modify_qp(self.qp.as_ptr(), &mut attr, mask.0 as i32) != 0 {
                tracing::warn!("cannot move an RDMA queue pair to the error state");
            }
        }
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: created in `new`; the queue pair goes before the queue it completes into.
        unsafe {
            ibv_destroy_qp(self.qp.as_ptr());
            ibv_destroy_cq(self.cq.as_ptr());
        }
    }
}

fn rdma_config(reason: &str) -> Error {
    Error::Config { field: "rdma".into(), reason: reason.into() }
}

/// A random 24-bit starting packet sequence number.
fn random_psn() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u32::from_le_bytes(bytes) & 0x00ff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_awaited_requests_completion_counts() {
        // A READ that timed out completes late (same queue, its own id): the next read, with a
        // new id, must not take it for its own.
        assert_eq!(completion_for(7, 8), Completion::Stale);
        assert_eq!(completion_for(8, 8), Completion::Ours);
    }
}
