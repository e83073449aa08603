complete -c moskillall -s s -l signal -d 'The signal: a name (TERM, SIGKILL) or a number; also as -NAME or -NUMBER' -r
complete -c moskillall -s u -l user -d 'Whose processes (a user name or uid); only root may name another user' -r
complete -c moskillall -l json -d 'Print JSON'
complete -c moskillall -s h -l help -d 'Print help (see more with \'--help\')'
complete -c moskillall -s V -l version -d 'Print version'
