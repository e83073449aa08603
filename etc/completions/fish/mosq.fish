# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mosq_global_optspecs
    string join \n json here h/help V/version
end

function __fish_mosq_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mosq_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mosq_using_subcommand
    set -l cmd (__fish_mosq_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mosq -n "__fish_mosq_needs_command" -l json -d 'Print JSON (list)'
complete -c mosq -n "__fish_mosq_needs_command" -l here -d 'List this node\'s queue only (the others\' counts from the gossip)'
complete -c mosq -n "__fish_mosq_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mosq -n "__fish_mosq_needs_command" -s V -l version -d 'Print version'
complete -c mosq -n "__fish_mosq_needs_command" -f -a "list" -d 'List the cluster\'s queue (with --here: this node\'s)'
complete -c mosq -n "__fish_mosq_needs_command" -f -a "delete" -d 'Take a job out of the queue: it ends without running (its mosrun exits 1)'
complete -c mosq -n "__fish_mosq_needs_command" -f -a "run" -d 'Start a job now, ahead of its turn'
complete -c mosq -n "__fish_mosq_needs_command" -f -a "pri" -d 'Give a job another priority (lower first)'
complete -c mosq -n "__fish_mosq_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mosq -n "__fish_mosq_using_subcommand list" -s h -l help -d 'Print help'
complete -c mosq -n "__fish_mosq_using_subcommand delete" -s h -l help -d 'Print help'
complete -c mosq -n "__fish_mosq_using_subcommand run" -s h -l help -d 'Print help'
complete -c mosq -n "__fish_mosq_using_subcommand pri" -s h -l help -d 'Print help'
complete -c mosq -n "__fish_mosq_using_subcommand help; and not __fish_seen_subcommand_from list delete run pri help" -f -a "list" -d 'List the cluster\'s queue (with --here: this node\'s)'
complete -c mosq -n "__fish_mosq_using_subcommand help; and not __fish_seen_subcommand_from list delete run pri help" -f -a "delete" -d 'Take a job out of the queue: it ends without running (its mosrun exits 1)'
complete -c mosq -n "__fish_mosq_using_subcommand help; and not __fish_seen_subcommand_from list delete run pri help" -f -a "run" -d 'Start a job now, ahead of its turn'
complete -c mosq -n "__fish_mosq_using_subcommand help; and not __fish_seen_subcommand_from list delete run pri help" -f -a "pri" -d 'Give a job another priority (lower first)'
complete -c mosq -n "__fish_mosq_using_subcommand help; and not __fish_seen_subcommand_from list delete run pri help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
