# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vcluster_global_optspecs
    string join \n h/help V/version
end

function __fish_vcluster_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vcluster_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vcluster_using_subcommand
    set -l cmd (__fish_vcluster_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vcluster -n "__fish_vcluster_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vcluster -n "__fish_vcluster_needs_command" -s V -l version -d 'Print version'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "up" -d 'Build a cluster and start its node services'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "down" -d 'Remove a cluster: processes, namespaces, cgroups, mounts, files'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "status" -d 'Show the nodes of a cluster'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "list" -d 'List the virtual clusters on this machine'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "exec" -d 'Run a program inside a node (its namespaces, cgroup and MOSIX environment)'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "env" -d 'Print shell commands that point the tools at a node (eval $(vcluster env 2))'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "start" -d 'Start a node\'s service'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "stop" -d 'Stop a node\'s service (politely with setpe -off, or with SIGKILL as a crash would)'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "demo" -d 'Build a 4-node cluster and show it at work, then remove it'
complete -c vcluster -n "__fish_vcluster_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l name -d 'The cluster\'s name' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -s n -l nodes -d 'Number of nodes (1..250)' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l cpus -d 'CPUs per node (the cgroup\'s quota). Default: this machine\'s CPUs divided among the nodes' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l mem -d 'Memory per node (bytes, or with K, M, G). Default: this machine\'s memory divided by nodes + 1' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l private -d 'A directory that each node has privately (its own mount namespace); may be repeated' -r -F
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l base -d 'Node I gets BASE + I; BASE must end in .0' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l interval-ms -d 'Milliseconds between two gossip messages of a node' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l dead-after-ms -d 'Information older than this marks a node down (milliseconds)' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l tunables -d 'A mosix.toml fragment for every node' -r -F
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l grid -d 'Cut the nodes into a grid of MOSIX clusters named a, b, c…, partners of each other: their sizes, e.g. 2,2 (nodes 1-2 are cluster a, 3-4 cluster b). Each has its own map, secret and partners file (partners(5)), a secret per partnership. Sets the number of nodes' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l priority -d 'With --grid: cluster X gives cluster Y priority P (1..65534, lower is better; default 10). May be repeated' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l terms -d 'With --grid: cluster X\'s options for cluster Y, joined by \'+\': nogo, notake, idle (partners(5)). May be repeated' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -l no-start -d 'Build the nodes but do not start their services'
complete -c vcluster -n "__fish_vcluster_using_subcommand up" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand down" -l name -d 'The cluster\'s name' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand down" -l all -d 'Remove every virtual cluster on this machine'
complete -c vcluster -n "__fish_vcluster_using_subcommand down" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand status" -l name -d 'The cluster\'s name' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand status" -l json -d 'Print JSON'
complete -c vcluster -n "__fish_vcluster_using_subcommand status" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand list" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand exec" -l name -d 'The cluster\'s name' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand exec" -l nobody -d 'Run it as nobody (uid and gid 65534, no supplementary groups), as a user\'s job: a node takes no process of root as a guest unless its mosix.toml says guests.accept_root'
complete -c vcluster -n "__fish_vcluster_using_subcommand exec" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand env" -l name -d 'The cluster\'s name' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand env" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand start" -l name -d 'The cluster\'s name' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand start" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand stop" -l name -d 'The cluster\'s name' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand stop" -l kill -d 'Kill the service with SIGKILL instead of stopping it'
complete -c vcluster -n "__fish_vcluster_using_subcommand stop" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand demo" -s n -l nodes -d 'Number of nodes' -r
complete -c vcluster -n "__fish_vcluster_using_subcommand demo" -l keep -d 'Leave the cluster running at the end'
complete -c vcluster -n "__fish_vcluster_using_subcommand demo" -s h -l help -d 'Print help'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "up" -d 'Build a cluster and start its node services'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "down" -d 'Remove a cluster: processes, namespaces, cgroups, mounts, files'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "status" -d 'Show the nodes of a cluster'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "list" -d 'List the virtual clusters on this machine'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "exec" -d 'Run a program inside a node (its namespaces, cgroup and MOSIX environment)'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "env" -d 'Print shell commands that point the tools at a node (eval $(vcluster env 2))'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "start" -d 'Start a node\'s service'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "stop" -d 'Stop a node\'s service (politely with setpe -off, or with SIGKILL as a crash would)'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "demo" -d 'Build a 4-node cluster and show it at work, then remove it'
complete -c vcluster -n "__fish_vcluster_using_subcommand help; and not __fish_seen_subcommand_from up down status list exec env start stop demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
