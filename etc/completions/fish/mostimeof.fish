complete -c mostimeof -l json -d 'Print JSON'
complete -c mostimeof -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mostimeof -s V -l version -d 'Print version'
