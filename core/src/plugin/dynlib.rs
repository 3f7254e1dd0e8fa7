//! The host side of the C ABI: a loaded library wrapped as a `Sampler` or
//! `Strategy` trait object, so the rest of the program cannot tell it from a
//! built-in.

use anyhow::{anyhow, bail, Context, Result};
use fine_plugin_api::abi::*;
use fine_plugin_api::tensors::{from_safetensors, to_safetensors, Tensors};
use fine_plugin_api::{
    Descendant, EpsFn, Graph, Learngene, Options, Parameterization, Plugin, PluginInfo, PluginKind, PoolMember, Probes,
    Sampler, SamplerContext, Strategy, WeightSpec,
};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::Path;

/// A loaded library's entry table. Libraries are never unloaded, so the
/// table stays valid for the life of the process.
#[derive(Clone, Copy)]
struct Lib {
    vt: &'static PluginVTable,
}

unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

impl Lib {
    /// Takes a buffer the plugin allocated, copies it out and frees it there.
    fn take(&self, b: FineBuf) -> Vec<u8> {
        let v = unsafe { b.to_vec() };
        (self.vt.free)(b);
        v
    }

    fn check(&self, status: i32, err: FineBuf, what: &str) -> Result<()> {
        let msg = String::from_utf8_lossy(&self.take(err)).to_string();
        match status {
            STATUS_OK => Ok(()),
            STATUS_PANIC => bail!("{what}: {msg}"),
            STATUS_UNSUPPORTED => bail!("{what}: the plugin does not support this call"),
            _ => bail!("{what}: {msg}"),
        }
    }
}

/// Refuses a file that cannot be a whole shared library before the dynamic
/// loader maps it (a truncated one would kill the process with SIGBUS): it must
/// be a regular file with an ELF, Mach-O or PE header, and for ELF every
/// section and program header the header announces, and every loadable
/// segment, must lie inside the file.
pub fn check_file(path: &Path) -> Result<()> {
    use std::io::Read;
    let meta = std::fs::metadata(path).with_context(|| format!("plugin library {}", path.display()))?;
    if !meta.is_file() {
        bail!("plugin library {} is not a regular file", path.display());
    }
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading plugin library {}", path.display()))?;
    let bad = |why: &str| anyhow!("{} is not a usable plugin library: {why}", path.display());
    match head {
        [0x7f, b'E', b'L', b'F', ..] => {
            if n < 64 || head[4] != 2 || head[5] != 1 {
                return Err(bad("not a 64-bit little-endian ELF file"));
            }
            let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().expect("8 bytes"));
            let u16_at = |o: usize| u16::from_le_bytes(head[o..o + 2].try_into().expect("2 bytes")) as u64;
            let (phoff, shoff) = (u64_at(32), u64_at(40));
            let (phsize, phnum, shsize, shnum) = (u16_at(54), u16_at(56), u16_at(58), u16_at(60));
            let ends = [phoff.checked_add(phsize * phnum), shoff.checked_add(shsize * shnum)];
            if ends.iter().any(|e| e.map_or(true, |e| e > meta.len())) {
                return Err(bad(&format!("truncated ({} bytes; its headers reach past the end)", meta.len())));
            }
            // Every segment the loader maps must lie inside the file too
            // (program headers: p_type u32 at 0, p_offset u64 at 8, p_filesz u64 at 32).
            if phnum == 0 || phsize < 40 {
                return Err(bad("no usable program headers"));
            }
            let mut ph = vec![0u8; (phsize * phnum) as usize]; // ≤ 65535², bounded by the file size above
            {
                use std::io::{Seek, SeekFrom};
                let mut f =
                    std::fs::File::open(path).with_context(|| format!("reading plugin library {}", path.display()))?;
                f.seek(SeekFrom::Start(phoff))
                    .and_then(|_| f.read_exact(&mut ph))
                    .with_context(|| format!("reading plugin library {}", path.display()))?;
            }
            for h in ph.chunks_exact(phsize as usize) {
                let at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
                const PT_LOAD: u32 = 1;
                let end = at(8).checked_add(at(32));
                if u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) == PT_LOAD
                    && end.map_or(true, |e| e > meta.len())
                {
                    return Err(bad(&format!(
                        "truncated ({} bytes; a loadable segment reaches past the end)",
                        meta.len()
                    )));
                }
            }
        }
        [0xcf, 0xfa, 0xed, 0xfe, ..] | [0xca, 0xfe, 0xba, 0xbe, ..] | [b'M', b'Z', ..] => {}
        _ => return Err(bad("no ELF, Mach-O or PE header")),
    }
    Ok(())
}

/// Loads the plugin library at `path`: checks the ABI version, reads its info,
/// and wraps it. The library is leaked (never unloaded).
pub fn load(path: &Path) -> Result<Plugin> {
    let lib = unsafe { libloading::Library::new(path) }
        .with_context(|| format!("loading plugin library {}", path.display()))?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    let version: libloading::Symbol<extern "C" fn() -> u32> = unsafe { lib.get(VERSION_SYMBOL) }
        .map_err(|_| anyhow!("{} is not a fine plugin: it exports no `fine_plugin_abi_version`", path.display()))?;
    let v = version();
    if v != ABI_VERSION {
        bail!("{}: plugin ABI version {v} does not match this fine's ABI version {ABI_VERSION}", path.display());
    }
    let entry: libloading::Symbol<extern "C" fn() -> *const PluginVTable> =
        unsafe { lib.get(ENTRY_SYMBOL) }.map_err(|_| anyhow!("{} exports no `fine_plugin_entry`", path.display()))?;
    let vt = entry();
    if vt.is_null() {
        bail!("{}: `fine_plugin_entry` returned null", path.display());
    }
    let vt: &'static PluginVTable = unsafe { &*vt };
    if vt.abi_version != ABI_VERSION {
        bail!("{}: plugin table version {} does not match ABI version {ABI_VERSION}", path.display(), vt.abi_version);
    }
    let lib = Lib { vt };
    let (mut out, mut err) = (FineBuf::empty(), FineBuf::empty());
    let s = (vt.info)(&mut out, &mut err);
    lib.check(s, err, &format!("{}: info", path.display()))?;
    let text = String::from_utf8(lib.take(out)).map_err(|_| anyhow!("{}: info is not UTF-8", path.display()))?;
    let info: PluginInfo =
        ron::from_str(&text).map_err(|e| anyhow!("{}: info is not a valid PluginInfo: {e}", path.display()))?;
    Ok(match info.kind {
        PluginKind::Sampler => Plugin::Sampler(Box::new(DynSampler { lib, info })),
        PluginKind::Strategy => Plugin::Strategy(Box::new(DynStrategy { lib, info })),
    })
}

// ---------------------------------------------------------------------------
// Samplers
// ---------------------------------------------------------------------------

struct DynSampler {
    lib: Lib,
    info: PluginInfo,
}

/// What the C callback reaches through `user`.
struct CallbackState<'a, 'b> {
    eps: &'a mut EpsFn<'b>,
    error: Option<anyhow::Error>,
}

extern "C" fn eps_trampoline(user: *mut c_void, x: *const f32, n: usize, t: usize, out: *mut f32) -> i32 {
    let st = unsafe { &mut *(user as *mut CallbackState) };
    let x = unsafe { std::slice::from_raw_parts(x, n) };
    match (st.eps)(x, t) {
        Ok(e) if e.len() == n => {
            unsafe { std::slice::from_raw_parts_mut(out, n).copy_from_slice(&e) };
            0
        }
        Ok(e) => {
            st.error = Some(anyhow!("denoiser returned {} values for {n}", e.len()));
            1
        }
        Err(e) => {
            st.error = Some(e);
            1
        }
    }
}

impl Sampler for DynSampler {
    fn info(&self) -> PluginInfo {
        self.info.clone()
    }

    fn sample(
        &self,
        ctx: &SamplerContext,
        opts: &Options,
        mut x: Vec<f32>,
        eps: &mut EpsFn,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let c = SampleCtx {
            alphas_cumprod: ctx.alphas_cumprod.as_ptr(),
            t_total: ctx.alphas_cumprod.len(),
            steps: ctx.steps,
            clip_denoised: ctx.clip_denoised as u8,
        };
        let o = opts.to_ron();
        let mut st = CallbackState { eps, error: None };
        let mut err = FineBuf::empty();
        let s = (self.lib.vt.sample)(
            &c,
            o.as_ptr(),
            o.len(),
            x.as_mut_ptr(),
            x.len(),
            seed,
            eps_trampoline,
            &mut st as *mut CallbackState as *mut c_void,
            &mut err,
        );
        if let Some(e) = st.error.take() {
            let _ = self.lib.take(err);
            return Err(e.context(format!("sampler `{}`", self.info.name)));
        }
        self.lib.check(s, err, &format!("sampler `{}`", self.info.name))?;
        Ok(x)
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

struct DynStrategy {
    lib: Lib,
    info: PluginInfo,
}

impl DynStrategy {
    fn call(&self, method: u32, req: String, tensors: Option<Vec<u8>>) -> Result<(String, Vec<u8>)> {
        let t = tensors.unwrap_or_default();
        let (mut reply, mut tout, mut err) = (FineBuf::empty(), FineBuf::empty(), FineBuf::empty());
        let s = (self.lib.vt.strategy)(
            method,
            req.as_ptr(),
            req.len(),
            t.as_ptr(),
            t.len(),
            &mut reply,
            &mut tout,
            &mut err,
        );
        let (r, to) = (self.lib.take(reply), self.lib.take(tout));
        self.lib.check(s, err, &format!("strategy `{}`", self.info.name))?;
        Ok((String::from_utf8(r).map_err(|_| anyhow!("strategy `{}`: reply is not UTF-8", self.info.name))?, to))
    }
}

impl Strategy for DynStrategy {
    fn info(&self) -> PluginInfo {
        self.info.clone()
    }

    fn ancestry(&self, graph: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Parameterization> {
        let req = AncestryReq { graph: graph.clone(), weights: weights.to_vec(), opts: opts.to_ron() };
        let (r, _) = self.call(METHOD_ANCESTRY, ron::to_string(&req)?, None)?;
        ron::from_str(&r).map_err(|e| anyhow!("strategy `{}`: bad ancestry reply: {e}", self.info.name))
    }

    fn extract(
        &self,
        graph: &Graph,
        weights: &[WeightSpec],
        spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Learngene> {
        let req =
            ExtractReq { graph: graph.clone(), weights: weights.to_vec(), spec: spec.clone(), opts: opts.to_ron() };
        let (r, t) =
            self.call(METHOD_EXTRACT, ron::to_string(&req)?, Some(to_safetensors(leaves, &BTreeMap::new())?))?;
        let h: LearngeneHeader =
            ron::from_str(&r).map_err(|e| anyhow!("strategy `{}`: bad extract reply: {e}", self.info.name))?;
        let (tensors, _) =
            from_safetensors(&t).with_context(|| format!("strategy `{}`: the tensors of its reply", self.info.name))?;
        Ok(Learngene { strategy: h.strategy, strategy_version: h.strategy_version, meta: h.meta, tensors })
    }

    fn descendant(&self, lg: &Learngene, target: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Descendant> {
        self.descendant_call(METHOD_DESCENDANT, lg, target, weights, opts, &lg.tensors)
    }

    fn pool(
        &self,
        graph: &Graph,
        spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Vec<PoolMember>> {
        let req = PoolReq { graph: graph.clone(), weights: Vec::new(), spec: spec.clone(), opts: opts.to_ron() };
        let (r, t) = self.call(METHOD_POOL, ron::to_string(&req)?, Some(to_safetensors(leaves, &BTreeMap::new())?))?;
        let headers: Vec<PoolMemberHeader> = self.reply(&r, "pool")?;
        let (values, _) =
            from_safetensors(&t).with_context(|| format!("strategy `{}`: the tensors of its reply", self.info.name))?;
        Ok(headers
            .into_iter()
            .enumerate()
            .map(|(i, h)| PoolMember {
                name: h.name,
                graph: h.graph,
                values: part_of(&values, &i.to_string()),
                frozen: h.frozen,
                steps: h.steps,
                alpha: h.alpha,
            })
            .collect())
    }

    fn descendant_graph(&self, lg: &Learngene, target: &Graph, opts: &Options) -> Result<Graph> {
        let r = self.graph_call(METHOD_DESCENDANT_GRAPH, lg, target, opts)?;
        self.reply(&r, "descendant_graph")
    }

    fn probes(&self, lg: &Learngene, target: &Graph, opts: &Options) -> Result<Probes> {
        let r = self.graph_call(METHOD_PROBES, lg, target, opts)?;
        self.reply(&r, "probes")
    }

    fn descendant_probed(
        &self,
        lg: &Learngene,
        target: &Graph,
        weights: &[WeightSpec],
        opts: &Options,
        features: &Tensors,
    ) -> Result<Descendant> {
        let t = join_tensors(&[("lg", &lg.tensors), ("feat", features)]);
        self.descendant_call(METHOD_DESCENDANT_PROBED, lg, target, weights, opts, &t)
    }
}

impl DynStrategy {
    /// Parses a RON reply of `method`.
    fn reply<T: serde::de::DeserializeOwned>(&self, r: &str, method: &str) -> Result<T> {
        ron::from_str(r).map_err(|e| anyhow!("strategy `{}`: bad {method} reply: {e}", self.info.name))
    }

    /// A `descendant` or `descendant_probed` call with `tensors`.
    fn descendant_call(
        &self,
        method: u32,
        lg: &Learngene,
        target: &Graph,
        weights: &[WeightSpec],
        opts: &Options,
        tensors: &Tensors,
    ) -> Result<Descendant> {
        let req = DescendantReq {
            learngene: LearngeneHeader::of(lg),
            target: target.clone(),
            weights: weights.to_vec(),
            opts: opts.to_ron(),
        };
        let (r, t) = self.call(method, ron::to_string(&req)?, Some(to_safetensors(tensors, &BTreeMap::new())?))?;
        let d: DescendantReply = self.reply(&r, "descendant")?;
        let (values, _) =
            from_safetensors(&t).with_context(|| format!("strategy `{}`: the tensors of its reply", self.info.name))?;
        Ok(Descendant { spec: d.spec, values, init_steps: d.init_steps })
    }

    /// A `descendant_graph` or `probes` call.
    fn graph_call(&self, method: u32, lg: &Learngene, target: &Graph, opts: &Options) -> Result<String> {
        let req = GraphReq { learngene: LearngeneHeader::of(lg), target: target.clone(), opts: opts.to_ron() };
        let (r, _) = self.call(method, ron::to_string(&req)?, Some(to_safetensors(&lg.tensors, &BTreeMap::new())?))?;
        Ok(r)
    }
}
