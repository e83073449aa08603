complete -c mps -s G -d 'Also list guests: processes of other nodes running here'
complete -c mps -l json -d 'Print JSON'
complete -c mps -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mps -s V -l version -d 'Print version'
