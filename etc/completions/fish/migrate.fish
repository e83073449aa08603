complete -c migrate -l wait -d 'Wait until the move is done and print where the process is'
complete -c migrate -l json -d 'Print JSON'
complete -c migrate -s h -l help -d 'Print help (see more with \'--help\')'
complete -c migrate -s V -l version -d 'Print version'
