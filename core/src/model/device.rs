//! Which device a command computes on: `--device cpu|cuda[:N]`.
//!
//! The default build is CPU-only and needs no CUDA anywhere; the workspace
//! feature `cuda` (dfdx's `cuda`, cuBLAS and NVRTC through cudarc) adds
//! `CudaDevice`. Asking a CPU-only build for CUDA is an error that says how
//! to get a CUDA build (`scripts/build-cuda.sh`).

use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (all cores through rayon).
    #[default]
    Cpu,
    /// NVIDIA GPU with this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            t => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => bail!("device `{s}` is not `cpu`, `cuda` or `cuda:N`"),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build has the `cuda` feature.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// dfdx's CUDA device.
#[cfg(feature = "cuda")]
pub type CudaDevice = dfdx::tensor::Cuda;

/// Opens GPU `ordinal` (its random stream seeded with 0; the runtime draws its
/// own randomness on the host), its memory pool keeping freed memory. cudarc 0.9 unwraps a failed `cuInit` (no
/// driver, no device), so that panic is caught and becomes the error.
#[cfg(feature = "cuda")]
pub fn cuda(ordinal: usize) -> Result<CudaDevice> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| dfdx::tensor::Cuda::try_build(ordinal, 0));
    std::panic::set_hook(hook);
    match r {
        Ok(Ok(dev)) => {
            keep_pool_memory(ordinal).map_err(|e| anyhow::anyhow!("CUDA device {ordinal}: its memory pool: {e}"))?;
            Ok(dev)
        }
        Ok(Err(e)) => bail!("cannot open CUDA device {ordinal}: {e:?}"),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            bail!("cannot open CUDA device {ordinal}: the CUDA driver failed to start ({msg})")
        }
    }
}

/// Keeps freed GPU memory in the device's default memory pool, the one
/// cudarc's `cuMemAllocAsync` draws from, instead of handing it back to the
/// driver at every synchronisation (the pool's default release threshold is 0),
/// as PyTorch's caching allocator does. dfdx's own cache stays off: it reuses a
/// buffer only for the very same size and holds every other one; on an H200
/// it made no difference to the DiT-S/2 step time (`docs/results/cuda-h200.md`).
#[cfg(feature = "cuda")]
fn keep_pool_memory(ordinal: usize) -> Result<()> {
    use cudarc::driver::sys;
    // SAFETY: plain driver calls with valid out-pointers; the driver is
    // initialised (the device was just opened).
    unsafe {
        let mut dev: sys::CUdevice = 0;
        let fail = |what: &str, e: cudarc::driver::DriverError| anyhow::anyhow!("{what}: {e:?}");
        sys::cuDeviceGet(&mut dev, ordinal as i32).result().map_err(|e| fail("cuDeviceGet", e))?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        sys::cuDeviceGetDefaultMemPool(&mut pool, dev).result().map_err(|e| fail("cuDeviceGetDefaultMemPool", e))?;
        let mut keep = u64::MAX;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut keep as *mut u64 as *mut std::ffi::c_void,
        )
        .result()
        .map_err(|e| fail("cuMemPoolSetAttribute", e))?;
    }
    Ok(())
}

/// The error for `--device cuda` in a CPU-only build.
pub fn no_cuda(spec: DeviceSpec) -> anyhow::Error {
    anyhow::anyhow!(
        "device `{spec}`: this `fine` was built without the `cuda` feature; \
         build one with `scripts/build-cuda.sh` (or `cargo build --release -p fine-cli --features cuda`)"
    )
}

/// Runs `$body` with `$dev` bound to the device `$spec` names: a
/// [`CpuDevice`](crate::model::store::CpuDevice), or a `CudaDevice` in a
/// `cuda` build. `$body` is compiled once per device type, so it calls
/// functions generic over [`Backend`](crate::model::Backend).
#[macro_export]
macro_rules! on_device {
    ($spec:expr, |$dev:ident| $body:expr) => {{
        match $spec {
            $crate::model::device::DeviceSpec::Cpu => {
                let $dev = $crate::model::store::CpuDevice::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::model::device::DeviceSpec::Cuda(n) => {
                let $dev = $crate::model::device::cuda(n)?;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            spec @ $crate::model::device::DeviceSpec::Cuda(_) => Err($crate::model::device::no_cuda(spec)),
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_cuda_and_ordinals() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cpu_only_build_refuses_cuda_with_a_hint() {
        let r: anyhow::Result<()> = crate::on_device!(DeviceSpec::Cuda(0), |dev| {
            let _ = dev;
            Ok(())
        });
        assert!(r.unwrap_err().to_string().contains("scripts/build-cuda.sh"));
    }
}
