# zsh completion for clusterctl. Load it from ~/.zshrc, after compinit:
#     source /path/to/clusterctl/completions/clusterctl.zsh
# It asks the installed clusterctl for its completion script, so the script always
# matches the click that clusterctl runs with (click changes it between versions).
# Node names, process names and ids complete from your hosts file and running nodes.
if (( $+commands[clusterctl] )); then
    eval "$(_CLUSTERCTL_COMPLETE=zsh_source clusterctl)"
fi
