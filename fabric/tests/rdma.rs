//! The RDMA verbs layer, where the host has a device (soft-RoCE counts). Elsewhere the test
//! says plainly that it skipped, and checks that the node would not advertise RDMA.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use baton_fabric::rdma::{Probe, probe};

#[test]
fn rdma_registration_or_a_plain_skip() {
    match probe() {
        Probe::NotBuilt => {
            eprintln!("SKIPPED rdma_registration: built without the `rdma` feature (cargo test --features rdma)");
        }
        Probe::NoDevice => {
            eprintln!("SKIPPED rdma_registration: no RDMA device on this host (load rdma_rxe for soft-RoCE)");
            assert!(!probe().has_device());
        }
        #[cfg(feature = "rdma")]
        Probe::Devices(names) => {
            let device = baton_fabric::rdma::Device::open_first().unwrap();
            assert!(names.iter().any(|n| n == device.name()));
            let bytes = bytes::Bytes::from(vec![7u8; 1 << 20]);
            let registration = device.register(bytes.clone()).unwrap();
            let region = registration.region();
            assert_eq!(region.len, 1 << 20);
            assert_eq!(region.addr, bytes.as_ptr() as u64);
        }
        #[cfg(not(feature = "rdma"))]
        Probe::Devices(_) => unreachable!("devices are only listed with the feature"),
    }
}
