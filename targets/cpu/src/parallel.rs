//! Intra-op parallelism: a [`Parallel`] handle on a rayon thread pool and helpers that split a kernel's work.
//!
//! **Determinism invariant:** results are bit-identical for every thread count. The helpers only ever split work
//! over *independent output elements* (chunks of an output buffer, output rows, batch items, channels); each
//! element is computed by exactly the code and the summation order it would see on one thread. No helper splits a
//! reduction. The `gemm` crate is called with `Parallelism::Rayon(n)` inside the pool; it too splits only over
//! output tiles, with k-blocking that does not depend on the thread count (checked by tests comparing 1 and 4
//! threads on odd shapes). [`crate::packed_gemm`] also splits only over output tiles, and computes each output
//! element as one FMA chain in k order whatever its blocking, so its results do not depend on the split either.
//!
//! Which kernels split: matrix products and convolutions (`gemm`, conv tiles), elementwise and fused elementwise
//! kernels and activations (chunks of the output), pools and BatchNormalization (planes), Softmax and
//! Layer/RMS normalization (chunks of whole rows), Transpose/Slice/Pad/Expand (positions of the first output
//! axis). Each only from an output of about two [`MIN_CHUNK`]s up, and a run enters the pool only at a step with
//! that much work (`exec.rs`), so kernels of a few microseconds never pay for a thread hand-over.
//!
//! One thread means no pool at all: everything runs inline on the caller's thread. Pools are shared per thread
//! count by every executable of the process (the conformance runner compiles thousands of graphs; each would
//! otherwise start its own threads).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::ExecError;

/// Work below this many output elements per chunk is not worth a task of its own.
pub const MIN_CHUNK: usize = 16 * 1024;

/// Where a compiled executable runs its kernels: inline (1 thread) or in a rayon pool of `threads` threads.
#[derive(Clone)]
pub struct Parallel {
    threads: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl std::fmt::Debug for Parallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallel")
            .field("threads", &self.threads)
            .finish()
    }
}

/// The number of cores available to this process (at least 1).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn shared_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, ExecError> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked while inserting; the map itself is still valid.
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("jiuzhou-cpu-{i}"))
        .build()
        .map_err(|e| ExecError::new(format!("cannot start {threads} worker threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(threads, pool.clone());
    Ok(pool)
}

impl Parallel {
    /// A handle for `threads` threads; 0 means every available core.
    pub fn new(threads: usize) -> Result<Parallel, ExecError> {
        let threads = if threads == 0 {
            available_cores()
        } else {
            threads
        };
        let pool = if threads > 1 {
            Some(shared_pool(threads)?)
        } else {
            None
        };
        Ok(Parallel { threads, pool })
    }

    /// Runs everything inline on the caller's thread.
    pub const fn single() -> Parallel {
        Parallel {
            threads: 1,
            pool: None,
        }
    }

    /// The number of threads kernels use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether work is split at all.
    pub fn is_parallel(&self) -> bool {
        self.pool.is_some()
    }

    /// Runs `f` inside the pool (so that nested rayon work, `gemm`'s included, uses its threads), or inline.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The parallelism to hand to the `gemm` crate from inside [`Parallel::install`].
    pub fn gemm(&self) -> gemm::Parallelism {
        if self.threads > 1 {
            gemm::Parallelism::Rayon(self.threads)
        } else {
            gemm::Parallelism::None
        }
    }

    /// The chunk length to split `len` elements into: at least `min_chunk`, at most about four chunks per thread.
    /// The split depends on the thread count, so callers must only split independent outputs.
    pub fn chunk_len(&self, len: usize, min_chunk: usize) -> usize {
        let per = len.div_ceil(self.threads * 4).max(min_chunk).max(1);
        per.min(len.max(1))
    }

    /// Calls `f(start, chunk)` for consecutive chunks of `out` (of `granule`-multiple lengths, at least
    /// `min_elems` elements), in parallel when there are threads and more than one chunk. `start` is the index of
    /// the chunk's first element in `out`.
    pub fn for_each_chunk<T: Send>(
        &self,
        out: &mut [T],
        granule: usize,
        min_elems: usize,
        f: impl Fn(usize, &mut [T]) + Sync + Send,
    ) {
        let granule = granule.max(1);
        let units = out.len() / granule;
        if !self.is_parallel() || units < 2 || out.len() < 2 * min_elems {
            f(0, out);
            return;
        }
        let per = self.chunk_len(units, min_elems.div_ceil(granule)) * granule;
        out.par_chunks_mut(per)
            .enumerate()
            .for_each(|(i, c)| f(i * per, c));
    }

    /// Like [`Parallel::for_each_chunk`] but `f` can fail; the first error (in chunk order) is returned.
    pub fn try_for_each_chunk<T: Send>(
        &self,
        out: &mut [T],
        granule: usize,
        min_elems: usize,
        f: impl Fn(usize, &mut [T]) -> Result<(), ExecError> + Sync + Send,
    ) -> Result<(), ExecError> {
        let granule = granule.max(1);
        let units = out.len() / granule;
        if !self.is_parallel() || units < 2 || out.len() < 2 * min_elems {
            return f(0, out);
        }
        let per = self.chunk_len(units, min_elems.div_ceil(granule)) * granule;
        let results: Vec<Result<(), ExecError>> = out
            .par_chunks_mut(per)
            .enumerate()
            .map(|(i, c)| f(i * per, c))
            .collect();
        results.into_iter().collect()
    }

    /// Calls `f(i, item)` for every exact `item_len`-long item of `out` (rows, planes, batch items), in parallel
    /// when `parallel` holds and there are threads. Each item is one task.
    pub fn for_each_item<T: Send>(
        &self,
        out: &mut [T],
        item_len: usize,
        parallel: bool,
        f: impl Fn(usize, &mut [T]) + Sync + Send,
    ) {
        if item_len == 0 {
            return;
        }
        if self.is_parallel() && parallel && out.len() > item_len {
            out.par_chunks_exact_mut(item_len)
                .enumerate()
                .for_each(|(i, c)| f(i, c));
        } else {
            out.chunks_exact_mut(item_len)
                .enumerate()
                .for_each(|(i, c)| f(i, c));
        }
    }

    /// Calls `f(i)` for `i in 0..n`, in parallel when there are threads; `f` must only touch state of item `i`.
    pub fn for_each_index(&self, n: usize, f: impl Fn(usize) + Sync + Send) {
        if self.is_parallel() && n > 1 {
            (0..n).into_par_iter().for_each(f);
        } else {
            (0..n).for_each(f);
        }
    }
}

/// A raw mutable pointer that may be shared between the tasks of one parallel loop, each writing a disjoint part.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);

// SAFETY: the users of `SharedMut` guarantee that concurrent tasks write disjoint elements and that the pointee
// outlives the loop (it is only built from a `&mut [T]` borrowed for the loop's duration).
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Send + Sync` wrapper rather than its field).
    pub fn ptr(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_element_once() {
        for threads in [1, 2, 3, 4] {
            let par = Parallel::new(threads).unwrap();
            for len in [0, 1, 7, 100, 1000, 100_003] {
                let mut v = vec![0u32; len];
                par.install(|| {
                    par.for_each_chunk(&mut v, 3, 16, |start, c| {
                        for (i, x) in c.iter_mut().enumerate() {
                            *x += (start + i) as u32 + 1;
                        }
                    })
                });
                assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 + 1));
            }
        }
    }

    #[test]
    fn zero_means_all_cores_and_one_means_inline() {
        assert_eq!(Parallel::new(0).unwrap().threads(), available_cores());
        let one = Parallel::new(1).unwrap();
        assert!(!one.is_parallel());
        assert!(matches!(one.gemm(), gemm::Parallelism::None));
        let main = std::thread::current().id();
        assert_eq!(one.install(|| std::thread::current().id()), main);
        assert!(Parallel::new(3).unwrap().is_parallel());
    }

    #[test]
    fn errors_come_back_in_chunk_order() {
        let par = Parallel::new(4).unwrap();
        let mut v = vec![0u8; 1 << 20];
        let r = par.install(|| {
            par.try_for_each_chunk(&mut v, 1, 1024, |start, _| {
                if start > 0 {
                    Err(ExecError::new(format!("chunk at {start}")))
                } else {
                    Ok(())
                }
            })
        });
        let e = r.unwrap_err().0;
        let first: usize = e.trim_start_matches("chunk at ").parse().unwrap();
        assert_eq!(first, par.chunk_len(1 << 20, 1024));
    }
}
