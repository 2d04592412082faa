//! Reads untrusted bytes through every reader path; the fuzz target and its corpus replay test
//! call this. It must return (Ok or Err), never panic, whatever the input.
