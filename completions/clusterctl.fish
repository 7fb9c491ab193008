# fish completion for clusterctl. Copy it to ~/.config/fish/completions/clusterctl.fish.
# It asks the installed clusterctl for its completion script, so the script always
# matches the click that clusterctl runs with (click changes it between versions).
# Node names, process names and ids complete from your hosts file and running nodes.
if command -q clusterctl
    _CLUSTERCTL_COMPLETE=fish_source clusterctl | source
end
