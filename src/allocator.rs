//! The memory allocator of every program built on this crate (the daemon, its tests and benchmarks):
//! jemalloc, tuned to give freed memory back within a second.
//!
//! A backfill allocates and frees pages of orders, statements' bound arrays and answers of up to tens of
//! megabytes from several threads. glibc's allocator spent about a fifth of the daemon's CPU there; with
//! jemalloc a backfill takes 15–40 % less CPU (docs/BENCHMARKS.md, session 11). jemalloc's default keeps
//! freed pages for ten seconds, which raised a backfill's peak RSS by about 5 MB; purging after one second
//! keeps it where glibc had it.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (before `main`) from this symbol: freed pages are
/// returned after a second (`dirty_decay_ms`), and at once rather than kept lazily (`muzzy_decay_ms`).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];
