//! A FreeSWITCH 1.10.12 stand-in for the fsfleet testbed: Event Socket, api commands, SIP
//! registrar, freeswitch.log, fs_cli and a SIP REGISTER test client, byte-compatible with the
//! real thing for everything fsfleet touches.

pub mod acl;
pub mod api;
pub mod config;
pub mod core;
pub mod dialplan;
pub mod esl;
pub mod fs_cli;
pub mod logfile;
pub mod netinfo;
pub mod registrations;
pub mod serve;
pub mod sip;
pub mod tls;
pub mod xml;
