//! The versioned C ABI between `fine` and a drop-in plugin library.
//!
//! Only plain data crosses it: f32/f64 buffers with lengths, RON text
//! (options, graphs, parameterizations, info), safetensors bytes (tensors),
//! status codes and error strings. No Rust types, no dfdx.
//!
//! * Handshake: the library exports `fine_plugin_abi_version() -> u32`; the
//!   host refuses a library whose version differs from [`ABI_VERSION`],
//!   naming both. Then `fine_plugin_entry() -> *const PluginVTable`.
//! * Memory: a [`FineBuf`] returned by the plugin was allocated by the plugin
//!   and is released by calling the plugin's `free`; buffers passed in by the
//!   host stay the host's.
//! * Panics inside the plugin are caught on the plugin's side and returned as
//!   [`STATUS_PANIC`] with the message; the host keeps running.
//! * The host never unloads a library and owns any device context.

use crate::info::Options;
use crate::param::Parameterization;
use crate::sampler::SamplerContext;
use crate::strategy::{Descendant, Learngene, WeightSpec};
use crate::tensors::{from_safetensors, to_safetensors, Tensors};
use crate::{Graph, Plugin};
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Version of this interface. Bump on any change to the types below.
/// 3: weights carry their role and block; `extract` receives the weights.
pub const ABI_VERSION: u32 = 3;
/// Exported symbol: `extern "C" fn() -> u32`.
pub const VERSION_SYMBOL: &[u8] = b"fine_plugin_abi_version\0";
/// Exported symbol: `extern "C" fn() -> *const PluginVTable`.
pub const ENTRY_SYMBOL: &[u8] = b"fine_plugin_entry\0";

/// Success.
pub const STATUS_OK: i32 = 0;
/// The call failed; the error buffer holds the message.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked; the error buffer holds the panic message.
pub const STATUS_PANIC: i32 = 2;
/// The plugin is not of the kind this call needs.
pub const STATUS_UNSUPPORTED: i32 = 3;

/// Strategy method: phase-1 parameterization.
pub const METHOD_ANCESTRY: u32 = 1;
/// Strategy method: extract the learngene.
pub const METHOD_EXTRACT: u32 = 2;
/// Strategy method: build a descendant.
pub const METHOD_DESCENDANT: u32 = 3;
/// [`crate::Strategy::pool`] (ABI 2).
pub const METHOD_POOL: u32 = 4;
/// [`crate::Strategy::descendant_graph`] (ABI 2).
pub const METHOD_DESCENDANT_GRAPH: u32 = 5;
/// [`crate::Strategy::probes`] (ABI 2).
pub const METHOD_PROBES: u32 = 6;
/// [`crate::Strategy::descendant_probed`] (ABI 2; tensors: the learngene's
/// under `lg/`, the probed features under `feat/`).
pub const METHOD_DESCENDANT_PROBED: u32 = 7;

/// Bytes allocated by the plugin, released by the plugin's `free`.
#[repr(C)]
pub struct FineBuf {
    /// Start of the bytes (null when empty).
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
    /// Allocation capacity (needed to free).
    pub cap: usize,
}

impl FineBuf {
    /// An empty buffer.
    pub const fn empty() -> Self {
        Self { ptr: std::ptr::null_mut(), len: 0, cap: 0 }
    }
    /// Hands a vector over (the receiver must return it to the allocator's `free`).
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        Self { ptr: v.as_mut_ptr(), len: v.len(), cap: v.capacity() }
    }
    /// Copies the bytes out.
    ///
    /// # Safety
    /// `ptr`/`len` must describe live memory (as written by [`FineBuf::from_vec`]).
    pub unsafe fn to_vec(&self) -> Vec<u8> {
        if self.ptr.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(self.ptr, self.len).to_vec()
        }
    }
    /// Rebuilds the vector to drop it, in the library that allocated it.
    ///
    /// # Safety
    /// Must come from [`FineBuf::from_vec`] in this same library.
    pub unsafe fn free(self) {
        if !self.ptr.is_null() {
            drop(Vec::from_raw_parts(self.ptr, self.len, self.cap));
        }
    }
}

/// The host's ε callback: writes `n` values to `out`; returns 0 on success.
pub type EpsCallback = extern "C" fn(user: *mut c_void, x: *const f32, n: usize, t: usize, out: *mut f32) -> i32;

/// Sampler context as plain data.
#[repr(C)]
pub struct SampleCtx {
    /// ᾱ_t, `t_total` values.
    pub alphas_cumprod: *const f64,
    /// T.
    pub t_total: usize,
    /// K.
    pub steps: usize,
    /// 1 to clip x₀ to [-1, 1].
    pub clip_denoised: u8,
}

/// The table of entry points a plugin library exports.
#[repr(C)]
pub struct PluginVTable {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// Writes the RON [`PluginInfo`].
    pub info: extern "C" fn(out: *mut FineBuf, err: *mut FineBuf) -> i32,
    /// Releases a buffer this library allocated.
    pub free: extern "C" fn(buf: FineBuf),
    /// Runs a sampler in place on `x` (`n` values); options as RON.
    #[allow(clippy::type_complexity)]
    pub sample: extern "C" fn(
        ctx: *const SampleCtx,
        opts: *const u8,
        opts_len: usize,
        x: *mut f32,
        n: usize,
        seed: u64,
        cb: EpsCallback,
        user: *mut c_void,
        err: *mut FineBuf,
    ) -> i32,
    /// Calls a strategy method: RON request + safetensors in, RON reply + safetensors out.
    #[allow(clippy::type_complexity)]
    pub strategy: extern "C" fn(
        method: u32,
        req: *const u8,
        req_len: usize,
        tensors: *const u8,
        tensors_len: usize,
        out_reply: *mut FineBuf,
        out_tensors: *mut FineBuf,
        err: *mut FineBuf,
    ) -> i32,
}

// ---------------------------------------------------------------------------
// Requests and replies of strategy methods (RON)
// ---------------------------------------------------------------------------

/// `ancestry` request.
#[derive(Serialize, Deserialize)]
pub struct AncestryReq {
    /// Ancestry graph.
    pub graph: Graph,
    /// Its weights.
    pub weights: Vec<WeightSpec>,
    /// Options (RON from [`Options::to_ron`]).
    pub opts: String,
}

/// `extract` request (tensors: the trained leaves).
#[derive(Serialize, Deserialize)]
pub struct ExtractReq {
    /// Ancestry graph.
    pub graph: Graph,
    /// Its weights (empty in a `pool` request).
    #[serde(default)]
    pub weights: Vec<WeightSpec>,
    /// Its parameterization.
    pub spec: Parameterization,
    /// Options.
    pub opts: String,
}

/// Learngene header (tensors travel separately).
#[derive(Serialize, Deserialize)]
pub struct LearngeneHeader {
    /// Strategy name.
    pub strategy: String,
    /// Strategy version.
    pub strategy_version: String,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
}

impl LearngeneHeader {
    /// The header of `lg`.
    pub fn of(lg: &Learngene) -> Self {
        LearngeneHeader {
            strategy: lg.strategy.clone(),
            strategy_version: lg.strategy_version.clone(),
            meta: lg.meta.clone(),
        }
    }

    /// The learngene this header describes, with `tensors`.
    pub fn with(self, tensors: Tensors) -> Learngene {
        Learngene { strategy: self.strategy, strategy_version: self.strategy_version, meta: self.meta, tensors }
    }
}

/// `descendant` request (tensors: the learngene's).
#[derive(Serialize, Deserialize)]
pub struct DescendantReq {
    /// The learngene's header.
    pub learngene: LearngeneHeader,
    /// Target graph.
    pub target: Graph,
    /// Its weights.
    pub weights: Vec<WeightSpec>,
    /// Options.
    pub opts: String,
}

/// `pool` request (tensors: the trained leaves).
pub type PoolReq = ExtractReq;

/// One pool member of a `pool` reply; its start values travel as tensors
/// named `{index}/{weight}`.
#[derive(Serialize, Deserialize)]
pub struct PoolMemberHeader {
    /// [`crate::PoolMember::name`].
    pub name: String,
    /// [`crate::PoolMember::graph`].
    pub graph: Graph,
    /// [`crate::PoolMember::frozen`].
    pub frozen: Vec<String>,
    /// [`crate::PoolMember::steps`].
    pub steps: usize,
    /// [`crate::PoolMember::alpha`].
    pub alpha: f32,
}

/// `descendant_graph` and `probes` request (tensors: the learngene's).
#[derive(Serialize, Deserialize)]
pub struct GraphReq {
    /// The learngene's header.
    pub learngene: LearngeneHeader,
    /// Target graph.
    pub target: Graph,
    /// Options.
    pub opts: String,
}

/// Tensor maps `parts` as one set, each name under its part's prefix (`lg/…`).
pub fn join_tensors(parts: &[(&str, &Tensors)]) -> Tensors {
    let mut all = Tensors::new();
    for (prefix, t) in parts {
        for (k, v) in t.iter() {
            all.insert(format!("{prefix}/{k}"), v.clone());
        }
    }
    all
}

/// The tensors of `all` under `prefix/`, the prefix removed.
pub fn part_of(all: &Tensors, prefix: &str) -> Tensors {
    let p = format!("{prefix}/");
    all.iter().filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.clone()))).collect()
}

/// `descendant` reply (tensors: leaf values).
#[derive(Serialize, Deserialize)]
pub struct DescendantReply {
    /// Parameterization.
    pub spec: Parameterization,
    /// Initialization-phase steps.
    pub init_steps: usize,
}

// ---------------------------------------------------------------------------
// Plugin side: the generic implementations behind `export_plugin!`
// ---------------------------------------------------------------------------

/// Gives the exported functions their plugin instance.
pub trait Provider {
    /// The one instance of this library's plugin.
    fn get() -> &'static Plugin;
}

fn write_err(err: *mut FineBuf, msg: String) {
    if !err.is_null() {
        unsafe { *err = FineBuf::from_vec(msg.into_bytes()) };
    }
}

/// Runs `f`, turning errors and panics into status codes and messages.
fn guarded(err: *mut FineBuf, f: impl FnOnce() -> Result<i32>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            write_err(err, format!("{e:#}"));
            STATUS_ERROR
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            write_err(err, format!("plugin panicked: {msg}"));
            STATUS_PANIC
        }
    }
}

unsafe fn bytes<'a>(p: *const u8, n: usize) -> &'a [u8] {
    if p.is_null() || n == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(p, n)
    }
}

fn text(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|e| anyhow!("request is not UTF-8: {e}"))
}

/// `info` for provider `P`.
#[allow(clippy::not_unsafe_ptr_arg_deref)] // a C entry point: the host guarantees valid pointers
pub extern "C" fn info_impl<P: Provider>(out: *mut FineBuf, err: *mut FineBuf) -> i32 {
    guarded(err, || {
        let s = ron::to_string(&P::get().info())?;
        unsafe { *out = FineBuf::from_vec(s.into_bytes()) };
        Ok(STATUS_OK)
    })
}

/// `free` for this library's allocations.
pub extern "C" fn free_impl(buf: FineBuf) {
    unsafe { buf.free() }
}

/// `sample` for provider `P`.
#[allow(clippy::too_many_arguments, clippy::not_unsafe_ptr_arg_deref)] // C entry point
pub extern "C" fn sample_impl<P: Provider>(
    ctx: *const SampleCtx,
    opts: *const u8,
    opts_len: usize,
    x: *mut f32,
    n: usize,
    seed: u64,
    cb: EpsCallback,
    user: *mut c_void,
    err: *mut FineBuf,
) -> i32 {
    guarded(err, || {
        let Plugin::Sampler(s) = P::get() else { return Ok(STATUS_UNSUPPORTED) };
        let (ctx, xs) = unsafe { (&*ctx, std::slice::from_raw_parts_mut(x, n)) };
        let ab = unsafe { std::slice::from_raw_parts(ctx.alphas_cumprod, ctx.t_total) };
        let c = SamplerContext { alphas_cumprod: ab, steps: ctx.steps, clip_denoised: ctx.clip_denoised != 0 };
        let opts = Options::from_ron(&s.info(), text(unsafe { bytes(opts, opts_len) })?)?;
        let mut eps = |x: &[f32], t: usize| -> Result<Vec<f32>> {
            let mut out = vec![0f32; x.len()];
            if cb(user, x.as_ptr(), x.len(), t, out.as_mut_ptr()) != 0 {
                bail!("the host's denoiser failed at t = {t}");
            }
            Ok(out)
        };
        let y = s.sample(&c, &opts, xs.to_vec(), &mut eps, seed)?;
        if y.len() != n {
            bail!("sampler returned {} values for {n}", y.len());
        }
        xs.copy_from_slice(&y);
        Ok(STATUS_OK)
    })
}

/// `strategy` for provider `P`.
#[allow(clippy::too_many_arguments, clippy::not_unsafe_ptr_arg_deref)] // C entry point
pub extern "C" fn strategy_impl<P: Provider>(
    method: u32,
    req: *const u8,
    req_len: usize,
    tensors: *const u8,
    tensors_len: usize,
    out_reply: *mut FineBuf,
    out_tensors: *mut FineBuf,
    err: *mut FineBuf,
) -> i32 {
    guarded(err, || {
        let Plugin::Strategy(s) = P::get() else { return Ok(STATUS_UNSUPPORTED) };
        let info = s.info();
        let req = text(unsafe { bytes(req, req_len) })?;
        let tin = unsafe { bytes(tensors, tensors_len) };
        let (reply, tout) = match method {
            METHOD_ANCESTRY => {
                let r: AncestryReq = ron::from_str(req)?;
                let spec = s.ancestry(&r.graph, &r.weights, &Options::from_ron(&info, &r.opts)?)?;
                (ron::to_string(&spec)?, None)
            }
            METHOD_EXTRACT => {
                let r: ExtractReq = ron::from_str(req)?;
                let (leaves, _) = from_safetensors(tin)?;
                let lg = s.extract(&r.graph, &r.weights, &r.spec, &leaves, &Options::from_ron(&info, &r.opts)?)?;
                let h = LearngeneHeader { strategy: lg.strategy, strategy_version: lg.strategy_version, meta: lg.meta };
                (ron::to_string(&h)?, Some(to_safetensors(&lg.tensors, &BTreeMap::new())?))
            }
            METHOD_DESCENDANT | METHOD_DESCENDANT_PROBED => {
                let r: DescendantReq = ron::from_str(req)?;
                let (t, _) = from_safetensors(tin)?;
                let opts = Options::from_ron(&info, &r.opts)?;
                let d: Descendant = if method == METHOD_DESCENDANT {
                    s.descendant(&r.learngene.with(t), &r.target, &r.weights, &opts)?
                } else {
                    let (lg, feat) = (r.learngene.with(part_of(&t, "lg")), part_of(&t, "feat"));
                    s.descendant_probed(&lg, &r.target, &r.weights, &opts, &feat)?
                };
                let reply = DescendantReply { spec: d.spec, init_steps: d.init_steps };
                (ron::to_string(&reply)?, Some(to_safetensors(&d.values, &BTreeMap::new())?))
            }
            METHOD_POOL => {
                let r: PoolReq = ron::from_str(req)?;
                let (leaves, _) = from_safetensors(tin)?;
                let members = s.pool(&r.graph, &r.spec, &leaves, &Options::from_ron(&info, &r.opts)?)?;
                let mut values = Tensors::new();
                let mut headers = Vec::new();
                for (i, m) in members.into_iter().enumerate() {
                    values.extend(join_tensors(&[(&i.to_string(), &m.values)]));
                    let h = PoolMemberHeader {
                        name: m.name,
                        graph: m.graph,
                        frozen: m.frozen,
                        steps: m.steps,
                        alpha: m.alpha,
                    };
                    headers.push(h);
                }
                (ron::to_string(&headers)?, Some(to_safetensors(&values, &BTreeMap::new())?))
            }
            METHOD_DESCENDANT_GRAPH | METHOD_PROBES => {
                let r: GraphReq = ron::from_str(req)?;
                let (t, _) = from_safetensors(tin)?;
                let (lg, opts) = (r.learngene.with(t), Options::from_ron(&info, &r.opts)?);
                let reply = if method == METHOD_DESCENDANT_GRAPH {
                    ron::to_string(&s.descendant_graph(&lg, &r.target, &opts)?)?
                } else {
                    ron::to_string(&s.probes(&lg, &r.target, &opts)?)?
                };
                (reply, None)
            }
            m => bail!("unknown strategy method {m}"),
        };
        unsafe {
            *out_reply = FineBuf::from_vec(reply.into_bytes());
            if let Some(t) = tout {
                *out_tensors = FineBuf::from_vec(t);
            }
        }
        Ok(STATUS_OK)
    })
}

/// Exports the C entry points of a plugin library (use in a cdylib, behind
/// the crate's `dylib` feature so that linking several plugins statically
/// into `fine` does not define the symbols twice):
///
/// ```ignore
/// #[cfg(feature = "dylib")]
/// fine_plugin_api::export_plugin!(Sampler, MySampler::default);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($kind:ident, $make:expr) => {
        #[doc(hidden)]
        pub struct __FinePluginProvider;
        impl $crate::abi::Provider for __FinePluginProvider {
            fn get() -> &'static $crate::Plugin {
                static P: ::std::sync::OnceLock<$crate::Plugin> = ::std::sync::OnceLock::new();
                P.get_or_init(|| $crate::Plugin::$kind(Box::new(($make)())))
            }
        }
        #[no_mangle]
        pub extern "C" fn fine_plugin_abi_version() -> u32 {
            $crate::abi::ABI_VERSION
        }
        #[no_mangle]
        pub extern "C" fn fine_plugin_entry() -> *const $crate::abi::PluginVTable {
            static VT: $crate::abi::PluginVTable = $crate::abi::PluginVTable {
                abi_version: $crate::abi::ABI_VERSION,
                info: $crate::abi::info_impl::<__FinePluginProvider>,
                free: $crate::abi::free_impl,
                sample: $crate::abi::sample_impl::<__FinePluginProvider>,
                strategy: $crate::abi::strategy_impl::<__FinePluginProvider>,
            };
            &VT
        }
    };
}
