# bash completion for clusterctl. Load it from ~/.bashrc:
#     . /path/to/clusterctl/completions/clusterctl.bash
# It asks the installed clusterctl for its completion script, so the script always
# matches the click that clusterctl runs with (click changes it between versions).
# Node names, process names and ids complete from your hosts file and running nodes.
if command -v clusterctl >/dev/null 2>&1; then
    eval "$(_CLUSTERCTL_COMPLETE=bash_source clusterctl)"
fi
