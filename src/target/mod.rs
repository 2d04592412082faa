//! The target side: where records go ([`dest`]: mapping, connecting, routing), turning them
//! into write commands ([`build`], [`resp`]) and writing them
//! through pipelined connections ([`lane`]) whose acknowledgements a [`track::Tracker`] counts
//! per block, for checkpoints. It knows nothing of files or snapshots.

pub mod build;
pub mod cluster;
pub mod dest;
pub mod dispatch;
pub mod lane;
pub mod preflight;
pub mod probe;
pub mod reply;
pub mod resp;
pub mod skiplog;
pub mod track;
