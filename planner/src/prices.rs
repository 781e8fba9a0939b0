//! AWS's list prices and instance figures, in one place: the planner's defaults and the
//! benchmark harness's dollars both read them. us-east-1, on-demand, as published in 2025–26
//! (Lambda x86, S3 Standard, EC2 Linux); check the current price pages before relying on a
//! figure.

/// Lambda: dollars per GB-second of configured memory (x86).
pub const LAMBDA_PER_GB_S: f64 = 0.000_016_666_7;
/// Lambda: dollars per invocation ($0.20 per million).
pub const LAMBDA_PER_REQUEST: f64 = 0.20 / 1e6;
/// S3 Standard: dollars per PUT, COPY, POST or LIST request ($0.005 per 1,000).
pub const S3_PER_WRITE: f64 = 0.005 / 1000.0;
/// S3 Standard: dollars per GET or HEAD request ($0.0004 per 1,000).
pub const S3_PER_READ: f64 = 0.0004 / 1000.0;
/// S3 Standard: dollars per GB-month stored.
pub const S3_PER_GB_MONTH: f64 = 0.023;
/// A memory store's rent, dollars per GB-hour of memory held (an r-family instance's memory,
/// about $0.0125 per GB-hour).
pub const MEMORY_STORE_PER_GB_HOUR: f64 = 0.0125;
/// S3's documented request rates per key prefix: writes (PUT, COPY, POST, DELETE) per second.
pub const S3_WRITES_PER_PREFIX_S: f64 = 3500.0;
/// Reads (GET, HEAD) per second per prefix.
pub const S3_READS_PER_PREFIX_S: f64 = 5500.0;

/// An EC2 instance type's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Instance {
    /// Its API name.
    pub name: &'static str,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in GiB.
    pub memory_gib: u32,
    /// Its baseline network bandwidth in Gbit/s (what it sustains, not its burst "up to").
    pub baseline_gbit: f64,
    /// Dollars per hour, on demand, Linux.
    pub per_hour: f64,
}

/// The instance types the benchmark harness emulates and deploys.
pub const INSTANCES: [Instance; 4] = [
    Instance { name: "c5n.2xlarge", vcpus: 8, memory_gib: 21, baseline_gbit: 10.0, per_hour: 0.432 },
    Instance { name: "c6in.2xlarge", vcpus: 8, memory_gib: 16, baseline_gbit: 12.5, per_hour: 0.4536 },
    Instance { name: "m6i.4xlarge", vcpus: 16, memory_gib: 64, baseline_gbit: 6.25, per_hour: 0.768 },
    Instance { name: "i4i.4xlarge", vcpus: 16, memory_gib: 128, baseline_gbit: 12.5, per_hour: 1.373 },
];

/// The instance type named `name`, if the table has it.
pub fn instance(name: &str) -> Option<Instance> {
    INSTANCES.iter().copied().find(|i| i.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_found_by_name_and_unknown_ones_are_not() {
        assert_eq!(instance("m6i.4xlarge").map(|i| i.vcpus), Some(16));
        assert!(instance("m6i.huge").is_none());
        assert!(INSTANCES.iter().all(|i| i.baseline_gbit > 0.0 && i.per_hour > 0.0));
    }
}
