complete -c mtop -s d -l delay -d 'Seconds between refreshes; with --once, the interval over which %CPU is measured' -r
complete -c mtop -s G -l guests -d 'Also show guests: processes of other nodes running here'
complete -c mtop -s A -d 'Every MOSIX process of the cluster, asked of every node that is up'
complete -c mtop -s i -l idle -d 'Hide processes that used no CPU in the last interval'
complete -c mtop -s c -l command-line -d 'Show whole command lines instead of program names'
complete -c mtop -l once -d 'Print one sample and exit'
complete -c mtop -l json -d 'With --once: print JSON'
complete -c mtop -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mtop -s V -l version -d 'Print version'
