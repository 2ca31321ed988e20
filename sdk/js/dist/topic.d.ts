/** Whether an MQTT topic name matches a filter (`+` one level, `#` the rest; `$share/group/` is ignored). */
export declare function topicMatches(filter: string, topic: string): boolean;
