//! Cluster-level tests: the tools and node services of the suite, on several nodes of one machine.
//!
//! `setpe_check` and `loopback` need no privileges; the others build virtual clusters (network
//! namespaces, cgroups) and need root — without it they say why they skip, and under `CI=true`
//! they fail instead.
#![allow(clippy::unwrap_used)]

mod balance;
mod blips;
mod checkpoint;
mod cli;
mod direct;
mod expel;
mod facts;
mod failures;
mod flood;
mod frames;
mod freeze;
mod gossip;
mod grid;
mod install;
mod live;
mod loopback;
mod metrics;
mod mfs;
mod migration;
mod queue;
mod root_jobs;
mod sandbox;
mod setpe_check;
mod terminal;
mod tools;
mod tour;
mod trust;
mod vcluster;
mod web;
mod writes;
