//! ctl client
