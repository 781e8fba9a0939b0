//! The RDMA map path's verbs layer (feature `rdma`): finding a device, and registering an
//! object's memory so that a consumer's NIC can read it one-sidedly, with no serialization.
//!
//! A registered object is described to the consumer by a [`RemoteRegion`] (address, length,
//! remote key), sent over the node's QUIC channel. What is here: device discovery, protection
//! domains, memory registration and its release. The consumer's queue-pair setup and RDMA READ
//! come next; without the feature, or without a device, [`probe`] says so and the node does not
//! advertise RDMA.

use serde::{Deserialize, Serialize};

/// What this build and host can do with RDMA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Built without the `rdma` feature.
    NotBuilt,
    /// Built with it, but the host has no RDMA device (or no verbs library).
    NoDevice,
    /// The RDMA devices found.
    Devices(Vec<String>),
}

impl Probe {
    /// Whether there is a device to serve RDMA with.
    pub fn has_device(&self) -> bool {
        matches!(self, Probe::Devices(d) if !d.is_empty())
    }
}

/// Where a consumer's NIC can read a registered object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRegion {
    /// Virtual address of the first byte in the producer node.
    pub addr: u64,
    /// Bytes registered.
    pub len: u64,
    /// The remote key that grants reading it.
    pub rkey: u32,
}

/// Lists the host's RDMA devices.
pub fn probe() -> Probe {
    #[cfg(feature = "rdma")]
    {
        match verbs::device_names() {
            Some(names) if !names.is_empty() => Probe::Devices(names),
            _ => Probe::NoDevice,
        }
    }
    #[cfg(not(feature = "rdma"))]
    {
        Probe::NotBuilt
    }
}

#[cfg(feature = "rdma")]
pub use verbs::{Device, Registration};

#[cfg(feature = "rdma")]
mod verbs {
    use std::ffi::CStr;
    use std::ptr::NonNull;

    use bytes::Bytes;
    use rdma_sys::{
        ibv_access_flags, ibv_alloc_pd, ibv_close_device, ibv_context, ibv_dealloc_pd, ibv_dereg_mr,
        ibv_free_device_list, ibv_get_device_list, ibv_get_device_name, ibv_mr, ibv_open_device, ibv_pd, ibv_reg_mr,
    };

    use super::RemoteRegion;
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

        /// Registers `bytes` for remote reading; the registration keeps them alive.
        pub fn register(&self, bytes: Bytes) -> Result<Registration> {
            let access = ibv_access_flags::IBV_ACCESS_REMOTE_READ.0 as i32;
            // SAFETY: the region is `bytes`, which the registration owns until it deregisters;
            // only remote reads are granted, so the NIC never writes to it.
            let mr = unsafe { ibv_reg_mr(self.pd.as_ptr(), bytes.as_ptr() as *mut _, bytes.len(), access) };
            let mr = NonNull::new(mr).ok_or_else(|| rdma_error("register memory"))?;
            Ok(Registration { mr, bytes })
        }
    }

    impl Drop for Device {
        fn drop(&mut self) {
            // SAFETY: created in `open_first`; registrations hold no reference to the device
            // (they must be dropped first, which `Registration`'s lifetime in the node ensures).
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
}
