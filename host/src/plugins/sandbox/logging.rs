//! The `logging` import (both worlds): messages into the node's log, tagged with the plugin's
//! name, each cut to [`MAX_MESSAGE_BYTES`], at most [`MAX_MESSAGES`] per call.

use super::bindings::logging::{self, Level};
use super::call::CallState;

pub(super) const MAX_MESSAGE_BYTES: usize = 4096;
pub(super) const MAX_MESSAGES: u32 = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl logging::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        self.logged = self.logged.saturating_add(1);
        if self.logged > MAX_MESSAGES {
            if self.logged == MAX_MESSAGES + 1 {
                tracing::warn!(plugin = %self.name, "plugin logged more than {MAX_MESSAGES} messages in one call; the rest are dropped");
            }
            return;
        }
        let m = truncate(&message, MAX_MESSAGE_BYTES);
        let plugin = &self.name;
        match level {
            Level::Debug => tracing::debug!(%plugin, "{m}"),
            Level::Info => tracing::info!(%plugin, "{m}"),
            Level::Warn => tracing::warn!(%plugin, "{m}"),
            Level::Error => tracing::error!(%plugin, "{m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_a_character_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("", 0), "");
    }
}
