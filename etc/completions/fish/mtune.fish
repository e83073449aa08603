complete -c mtune -s o -l output -d 'Write the file here instead of $MOSIX_ETC/mfscosts (`-` prints it); the service is told only when its own file is written' -r -F
complete -c mtune -s c -l calls -d 'Calls per timing (the median of three timings counts)' -r
complete -c mtune -s n -l dry-run -d 'Measure and print only; write nothing'
complete -c mtune -l json -d 'Print JSON'
complete -c mtune -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mtune -s V -l version -d 'Print version'
