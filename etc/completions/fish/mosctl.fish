# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mosctl_global_optspecs
    string join \n h/help V/version
end

function __fish_mosctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mosctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mosctl_using_subcommand
    set -l cmd (__fish_mosctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mosctl -n "__fish_mosctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mosctl -n "__fish_mosctl_needs_command" -s V -l version -d 'Print version'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "stay" -d 'No automatic migration of processes away from this node'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "nostay" -d 'Allow automatic migration away from this node again'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "lstay" -d 'This node\'s own processes stay; guests may still leave'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "nolstay" -d 'Allow this node\'s own processes to leave again'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "block" -d 'No guest processes may arrive'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "noblock" -d 'Accept guest processes again'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "expel" -d 'Send every guest process home and block new ones; returns when none is left (or after a minute), saying how many were sent. Interrupting it only stops the waiting'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "bring" -d 'Bring every process of this node home and keep them here (lstay); returns when all are home (or after a minute), saying how many came. Interrupting it only stops the waiting'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "closegrid" -d 'Close this node to the grid of partner clusters (partners(5)): no process of another cluster arrives, none of this cluster\'s leaves for another cluster, and every guest of another cluster here leaves now — for a node of its own cluster that has room, or home, where it is frozen if home has no room. Nobody is killed. Shows the guests still here until none is left; gives up waiting after a minute (exit status 1)'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "opengrid" -d 'Open this node to the grid again'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "quiet" -d 'Stop disseminating this node\'s load (the node still says it is alive)'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "noquiet" -d 'Disseminate this node\'s load again'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "mfs" -d 'Allow access to this node\'s files through MFS'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "nomfs" -d 'Refuse access to this node\'s files through MFS'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "status" -d 'Show a node\'s state: up or down, and its switches, in words; for this node also its cluster, its partner clusters and the guests here by cluster'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "isup" -d 'Print yes if a node is up, no if it is down (exit status 0 / 1)'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "whois" -d 'Without an argument: this node\'s number. With a node number: its address. With an address or host name: its node number'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "getload" -d 'A node\'s load (100 = one standard CPU fully busy)'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "getspeed" -d 'A node\'s speed per CPU (10000 = standard)'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "getmem" -d 'A node\'s memory available to processes (free plus reclaimable cache), in bytes'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "getfree" -d 'A node\'s physically free memory, in bytes'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "getutil" -d 'A node\'s CPU utilisation, in percent of its capacity'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "getcpus" -d 'A node\'s number of CPUs'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "setspeed" -d 'Set this node\'s speed per CPU (10000 = standard); a slower node receives less work'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "getdecay" -d 'Show the decay of per-process statistics: interval in seconds, per-mille kept for slow- and fast-decaying processes'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "setdecay" -d 'Set the decay of per-process statistics'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "gettune" -d 'Show the migration and remote-call costs the balancer uses (overheads(5)), or with --files the costs of reaching each node\'s files (mfscosts(5))'
complete -c mosctl -n "__fish_mosctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mosctl -n "__fish_mosctl_using_subcommand stay" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand nostay" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand lstay" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand nolstay" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand block" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand noblock" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand expel" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand expel" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand bring" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand bring" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand closegrid" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand closegrid" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand opengrid" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand quiet" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand noquiet" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand mfs" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand nomfs" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand status" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand status" -l raw -d 'Print a negative errno instead of failing when there is no value'
complete -c mosctl -n "__fish_mosctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand isup" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand isup" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand whois" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand whois" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand getload" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand getload" -l raw -d 'Print a negative errno instead of failing when there is no value'
complete -c mosctl -n "__fish_mosctl_using_subcommand getload" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand getspeed" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand getspeed" -l raw -d 'Print a negative errno instead of failing when there is no value'
complete -c mosctl -n "__fish_mosctl_using_subcommand getspeed" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand getmem" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand getmem" -l raw -d 'Print a negative errno instead of failing when there is no value'
complete -c mosctl -n "__fish_mosctl_using_subcommand getmem" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand getfree" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand getfree" -l raw -d 'Print a negative errno instead of failing when there is no value'
complete -c mosctl -n "__fish_mosctl_using_subcommand getfree" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand getutil" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand getutil" -l raw -d 'Print a negative errno instead of failing when there is no value'
complete -c mosctl -n "__fish_mosctl_using_subcommand getutil" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand getcpus" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand getcpus" -l raw -d 'Print a negative errno instead of failing when there is no value'
complete -c mosctl -n "__fish_mosctl_using_subcommand getcpus" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand setspeed" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand getdecay" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand getdecay" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand setdecay" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand gettune" -l json -d 'Print JSON'
complete -c mosctl -n "__fish_mosctl_using_subcommand gettune" -l files -d 'The file access costs (mfscosts(5), written by mtune) instead of the migration costs'
complete -c mosctl -n "__fish_mosctl_using_subcommand gettune" -s h -l help -d 'Print help'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "stay" -d 'No automatic migration of processes away from this node'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "nostay" -d 'Allow automatic migration away from this node again'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "lstay" -d 'This node\'s own processes stay; guests may still leave'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "nolstay" -d 'Allow this node\'s own processes to leave again'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "block" -d 'No guest processes may arrive'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "noblock" -d 'Accept guest processes again'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "expel" -d 'Send every guest process home and block new ones; returns when none is left (or after a minute), saying how many were sent. Interrupting it only stops the waiting'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "bring" -d 'Bring every process of this node home and keep them here (lstay); returns when all are home (or after a minute), saying how many came. Interrupting it only stops the waiting'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "closegrid" -d 'Close this node to the grid of partner clusters (partners(5)): no process of another cluster arrives, none of this cluster\'s leaves for another cluster, and every guest of another cluster here leaves now — for a node of its own cluster that has room, or home, where it is frozen if home has no room. Nobody is killed. Shows the guests still here until none is left; gives up waiting after a minute (exit status 1)'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "opengrid" -d 'Open this node to the grid again'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "quiet" -d 'Stop disseminating this node\'s load (the node still says it is alive)'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "noquiet" -d 'Disseminate this node\'s load again'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "mfs" -d 'Allow access to this node\'s files through MFS'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "nomfs" -d 'Refuse access to this node\'s files through MFS'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "status" -d 'Show a node\'s state: up or down, and its switches, in words; for this node also its cluster, its partner clusters and the guests here by cluster'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "isup" -d 'Print yes if a node is up, no if it is down (exit status 0 / 1)'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "whois" -d 'Without an argument: this node\'s number. With a node number: its address. With an address or host name: its node number'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "getload" -d 'A node\'s load (100 = one standard CPU fully busy)'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "getspeed" -d 'A node\'s speed per CPU (10000 = standard)'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "getmem" -d 'A node\'s memory available to processes (free plus reclaimable cache), in bytes'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "getfree" -d 'A node\'s physically free memory, in bytes'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "getutil" -d 'A node\'s CPU utilisation, in percent of its capacity'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "getcpus" -d 'A node\'s number of CPUs'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "setspeed" -d 'Set this node\'s speed per CPU (10000 = standard); a slower node receives less work'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "getdecay" -d 'Show the decay of per-process statistics: interval in seconds, per-mille kept for slow- and fast-decaying processes'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "setdecay" -d 'Set the decay of per-process statistics'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "gettune" -d 'Show the migration and remote-call costs the balancer uses (overheads(5)), or with --files the costs of reaching each node\'s files (mfscosts(5))'
complete -c mosctl -n "__fish_mosctl_using_subcommand help; and not __fish_seen_subcommand_from stay nostay lstay nolstay block noblock expel bring closegrid opengrid quiet noquiet mfs nomfs status isup whois getload getspeed getmem getfree getutil getcpus setspeed getdecay setdecay gettune help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
