complete -c setpe -l partners -d 'With -c: the partners file to check. Default: ETC/mosix/partners (if there is one)' -r -F
complete -c setpe -s f -d 'The map file; \'-\' reads standard input. Default: ETC/mosix.map' -r -F
complete -c setpe -s p -d 'This node\'s number, when no address of this machine is in the map (or several are)' -r
complete -c setpe -l map-name -d 'The name of the map in messages (used when the map arrives on standard input)' -r
complete -c setpe -s w -d 'Configure this node from the map and start its service (in the background)'
complete -c setpe -s W -d 'Like -w, but replace the configuration of a running service in place'
complete -c setpe -s c -d 'Only check the map for consistency, and the partners file (partners(5)) against it; change nothing'
complete -c setpe -s r -d 'Print the running configuration in map format (to FILE with -f)'
complete -c setpe -l off -d 'Stop this node: bring its processes home, send its guests home, then stop its service (written -off in the classic syntax). Processes that cannot move within a minute end with the node'
complete -c setpe -l new-secret -d 'Make the cluster secret, ETC/mosix/secret: 32 random bytes, mode 0600 from its creation (and ETC/mosix if there is none). Run it on one node and copy the file to the others (scp -p keeps the mode); an existing secret is never replaced'
complete -c setpe -l foreground -d 'With -w: keep the service in the foreground, logging to stderr (for systemd and tests)'
complete -c setpe -s h -l help -d 'Print help (see more with \'--help\')'
complete -c setpe -s V -l version -d 'Print version'
