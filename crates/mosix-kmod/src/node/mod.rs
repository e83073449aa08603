//! What a node is and how loaded it is: its CPUs, speed, run queue and memory, measured on the
//! machine or on the node's cgroup ([`measure`], [`cgroup`]); and its consent to automatic
//! arrivals ([`admission`]).

pub mod admission;
pub mod cgroup;
pub mod guests;
pub mod measure;
