complete -c tune -s o -l output -d 'Write the file here instead of $MOSIX_ETC/overheads (`-` prints it); the service is told only when its own file is written' -r -F
complete -c tune -l small -d 'Memory of the small test process, MiB' -r
complete -c tune -l large -d 'Memory of the large test process, MiB (more than --small)' -r
complete -c tune -s r -l repeat -d 'Moves per size and peer; the median counts' -r
complete -c tune -l calls -d 'Forwarded calls timed on each peer' -r
complete -c tune -s n -l dry-run -d 'Measure and print only; write nothing'
complete -c tune -l json -d 'Print JSON'
complete -c tune -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tune -s V -l version -d 'Print version'
