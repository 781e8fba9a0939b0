//! A child process's lifeline: the process that starts it keeps the write end of its standard
//! input and never writes; when that process closes it or dies, the child reads the end of its
//! input and knows to go (local pool workers, the benchmark's peer processes).

/// Blocks until standard input reaches its end or can no longer be read.
pub fn wait_for_stdin_to_close() {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    loop {
        match std::io::Read::read(&mut stdin, &mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}
