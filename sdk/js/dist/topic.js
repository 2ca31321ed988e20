/** Whether an MQTT topic name matches a filter (`+` one level, `#` the rest; `$share/group/` is ignored). */
export function topicMatches(filter, topic) {
    let f = filter;
    if (f.startsWith('$share/')) {
        const rest = f.indexOf('/', 7);
        if (rest < 0)
            return false;
        f = f.slice(rest + 1);
    }
    const fl = f.split('/');
    const tl = topic.split('/');
    // Wildcards at the first level never match topics starting with `$` (MQTT 4.7.2).
    if (topic.startsWith('$') && (fl[0] === '+' || fl[0] === '#'))
        return false;
    for (let i = 0; i < fl.length; i++) {
        const level = fl[i];
        if (level === '#')
            return true;
        if (i >= tl.length)
            return false;
        if (level !== '+' && level !== tl[i])
            return false;
    }
    return fl.length === tl.length;
}
