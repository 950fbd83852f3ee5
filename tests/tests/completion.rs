//! `ctl completion`: the scripts real shells load complete subcommands.

use std::process::Command;

fn complete_in_bash(words: &[&str]) -> Vec<String> {
    let ctl = ctl_tests::bin_dir().join("ctl");
    let script = format!(
        "source <({ctl} completion bash) || exit 9\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}\n\
         _ctl ctl {cur} {prev}\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        ctl = ctl.display(),
        words = words.join(" "),
        cword = words.len() - 1,
        cur = words.last().copied().unwrap_or(""),
        prev = words
            .get(words.len().saturating_sub(2))
            .copied()
            .unwrap_or("ctl"),
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_nested_ones() {
    assert_eq!(complete_in_bash(&["ctl", "sna"]), vec!["snapshot"]);
    let mut got = complete_in_bash(&["ctl", "snapshot", "re"]);
    got.sort();
    assert_eq!(got, vec!["rename", "restore"]);
    assert!(complete_in_bash(&["ctl", "pro"]).contains(&"profile".to_string()));
    assert_eq!(complete_in_bash(&["ctl", "stor"]), vec!["storage"]);
    assert_eq!(
        complete_in_bash(&["ctl", "storage", "volume", "att"]),
        vec!["attach", "attach-profile"]
    );
    let mut got = complete_in_bash(&["ctl", "storage", "volume", "snapshot", "re"]);
    got.sort();
    assert_eq!(got, vec!["rename", "restore"]);
    // Remotes, the server's trust store and the dashboard link.
    assert_eq!(complete_in_bash(&["ctl", "remote", "sw"]), vec!["switch"]);
    assert_eq!(complete_in_bash(&["ctl", "config", "tr"]), vec!["trust"]);
    let mut got = complete_in_bash(&["ctl", "config", "trust", "list"]);
    got.sort();
    assert_eq!(got, vec!["list", "list-tokens"]);
    assert_eq!(complete_in_bash(&["ctl", "ui"]), vec!["ui"]);
}

#[test]
fn zsh_and_fish_scripts_are_generated() {
    let ctl = ctl_tests::bin_dir().join("ctl");
    for (shell, marker) in [("zsh", "#compdef ctl"), ("fish", "complete -c ctl")] {
        let out = Command::new(&ctl)
            .args(["completion", shell])
            .output()
            .unwrap_or_else(|e| panic!("ctl completion {shell}: {e}"));
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(text.contains("snapshot"), "{shell}");
    }
    let bad = Command::new(&ctl)
        .args(["completion", "cmd.exe"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!bad.status.success());
}
